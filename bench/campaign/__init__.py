"""Campaigns of many cells: the presets, a sweep with resume, the discarded warm-up,
equal-budget tuning studies and their search spaces."""
