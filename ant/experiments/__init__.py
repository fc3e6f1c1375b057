"""Experiments built from training, sampling and evaluation: reproduction sweeps and analyses.

Reproduction sweeps (``ant reproduce``): variants x seeds of one recipe, evaluated alike,
tabulated and plotted.

- :mod:`ant.experiments.variants`: presets (``paper-digits``), ``METHOD-OBJECTIVE`` names, files;
- :mod:`ant.experiments.plan`: every run's overrides and validated recipe, resume checks;
- :mod:`ant.experiments.sweep`: ``ant train --resume`` subprocesses with progress and ETA;
- :mod:`ant.experiments.aggregate`: pure seed statistics, first-reach steps, flattening;
- :mod:`ant.experiments.report`: ``results.json``, ``results.md`` and ``curves_*.png``.

Analyses of trained models as multi-task learners (Go et al., NeurIPS 2023):

- :mod:`ant.experiments.affinity_run`: ``ant analyze affinity``, the task-affinity matrix
  between timestep groups (paper Fig. 1), with :mod:`ant.experiments.affinity` (the pure math),
  :mod:`ant.experiments.group_grads` and :mod:`ant.experiments.affinity_plot`;
- ``ant analyze ntg``: the negative transfer gap of interval-specific models (paper Sec. 3),
  computed by :mod:`ant.evaluation.ntg`.
"""
