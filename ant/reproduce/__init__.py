"""Reproduction sweeps: variants x seeds of one recipe, evaluated alike, tabulated and plotted.

- :mod:`ant.reproduce.variants`: presets (``paper-digits``), ``METHOD-OBJECTIVE`` names, YAML files;
- :mod:`ant.reproduce.plan`: every run's overrides and validated recipe, resume checks;
- :mod:`ant.reproduce.sweep`: ``ant train --resume`` subprocesses with progress and ETA;
- :mod:`ant.reproduce.aggregate`: pure seed statistics, first-reach steps, flattening;
- :mod:`ant.reproduce.report`: ``results.json``, ``results.md`` and ``curves_*.png``.

``ant reproduce --help`` (or ``python benchmarks/reproduce.py``) runs it; docs/results.md.
"""
