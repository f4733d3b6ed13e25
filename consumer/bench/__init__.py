"""Benchmarks, beside the product: `consumer bench` (worker.py: the worker against the limit and
a per-event loop, on the local services) and `python -m consumer.bench.pipeline` (pipeline.py:
the CPU cost of each part of the pipeline, in memory)."""
