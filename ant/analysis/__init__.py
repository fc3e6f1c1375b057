"""Analyses of trained diffusion models as multi-task learners (Go et al., NeurIPS 2023).

``ant analyze affinity``: the task-affinity matrix between timestep groups (paper Fig. 1).
``ant analyze ntg``: the negative transfer gap of interval-specific models (paper Sec. 3).
"""
