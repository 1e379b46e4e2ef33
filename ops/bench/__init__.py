"""``python -m ops.bench``: throughput and latency of the worker against a ceiling and a naive baseline."""
