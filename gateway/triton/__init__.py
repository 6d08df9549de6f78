"""Triton: the gRPC client pool that streams edits, and the registry of the models it serves.

May import: gateway.settings, gateway.errors, gateway.metrics, gateway.store (the edit's inputs).
"""
