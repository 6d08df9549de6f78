"""Jobs: accepting an edit (admission), reading and following it, waiting for it, cancelling it,
and running it in Triton (the runner, and the lifecycle that writes each state change).

May import: gateway.settings, gateway.errors, gateway.metrics, gateway.store, gateway.triton,
gateway.webhooks. Never gateway.batches, gateway.http or gateway.app.
"""
