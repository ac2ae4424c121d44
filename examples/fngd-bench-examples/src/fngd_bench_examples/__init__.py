"""An fngd-bench plugin: workloads and an optimiser from outside the suite (docs/PLUGINS.md
of fngd-bench). Each module is one registered thing; ``pyproject.toml`` registers them."""
