"""The tables several report sections share, each computed from the prepared records.

``reports.context.Context`` computes each of them once; the topic modules (reports/topics/)
render them and never compute them again, so no topic has to import another, and no table
depends on the section that shows it. One module per table family:

- ``steps``: per-step time per optimizer and mode (``step_times``)
- ``phases``: each phase's per-step time, inclusive and exclusive (``phase_times``)
- ``epochs``: first and later epochs, the projected schedule (``epoch_times``,
  ``PROJECT_EPOCHS``)
- ``speedup``: time to target and FNGD's speed-up over each baseline (``time_to_target``,
  ``speedup``)
- ``convergence``: the per-run curves, their medians and each run's final values
  (``convergence_long``, ``convergence``, ``final_values``)
"""
