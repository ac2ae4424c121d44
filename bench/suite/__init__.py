"""The pytest-benchmark suite: one training step per optimizer and workload, the FNGD width
sweep, the paper-size records benchmark (``pytest bench --benchmark-only``)."""
