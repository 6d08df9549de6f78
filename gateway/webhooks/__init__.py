"""Webhooks: where a callback may go (the operator's allowlist, checked addresses), and the signed,
retried delivery.

May import: gateway.settings, gateway.errors, gateway.metrics, gateway.store (the job it reports).
"""
