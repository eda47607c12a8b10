"""Benchmark harness: naive vs pipeline vs gunicorn service vs the machine's matmul limit."""
