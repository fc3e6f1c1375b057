"""The bottom layer: what every other package may use and nothing here imports from them.

Errors and their exit codes, atomic file writes, the progress style, the plugin manager and its
registries, the runtime (device, ranks, process group), and the run directory (checkpoints,
metrics, the trainer's lock).
"""
