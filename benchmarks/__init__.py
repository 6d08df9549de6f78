"""Benchmark scripts: each prints its figures and saves them as JSON under .bench/ (BENCHMARKS.md).

Run them from the repository root as modules, e.g. `.venv/bin/python -m benchmarks.load_test`.
"""

# The gateway a benchmark starts: its own key, and a rate limit that never gets in the way
# (a benchmark measures serving, not the limiter).
BENCH_KEY = "bench-key"
BENCH_GATEWAY_ENV = {
    "GATEWAY_API_KEYS": BENCH_KEY,
    "GATEWAY_AUTH_DISABLED": "false",
    "RATE_LIMIT": "1000000/minute",
    "REDIS_URL": "",
}
