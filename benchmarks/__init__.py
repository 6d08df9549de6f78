"""Benchmark scripts: each prints its figures and saves them as JSON under .bench/ (BENCHMARKS.md).

Run them from the repository root as modules, e.g. `.venv/bin/python -m benchmarks.load_test`.
"""
