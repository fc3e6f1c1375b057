"""Run a registered clustering objective and record its clusters (Go et al. 2023, Sec. 4.1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ant.clustering.intervals import validate_intervals
from ant.clustering.objectives import Clustering
from ant.clustering.space import TaskSpace
from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.plugins import registry

CLUSTERS_FILE = "clusters.json"


def cluster_tasks(
    objective: str,
    space: TaskSpace,
    k: int,
    options: Mapping[str, Any] | None = None,
    *,
    label: str = "objective",
) -> Clustering:
    """Build the objective registered as ``objective`` with ``options`` and cluster ``space``.

    The result must be a :class:`Clustering` whose intervals tile ``0..T-1``. Bad input (an
    unknown name, a ``k`` outside ``1..T``, a space the objective cannot use) raises a one-line
    :class:`AntError` that starts with ``label`` and the objective's name.
    """
    built = registry("objective").build(objective, **(options or {}))
    try:
        result = built.cluster(space, k)
    except ValueError as exc:
        raise AntError(f"{label} '{objective}': {exc}") from None
    if not isinstance(result, Clustering):
        raise AntError(
            f"{label} '{objective}' returned a {type(result).__name__}, not an "
            "ant.clustering.Clustering; the plugin providing it is incompatible with this ant"
        )
    try:
        validate_intervals(result.intervals, space.num_timesteps)
    except ValueError as exc:
        raise AntError(f"{label} '{objective}': {exc}") from None
    if result.k != k:
        raise AntError(f"{label} '{objective}' returned {result.k} intervals, not k = {k}")
    return result


def write_clusters(
    run_dir: Path, clustering: Clustering, *, sampling: str, timesteps: int, schedule: str
) -> Path:
    """Write ``RUN_DIR/clusters.json`` atomically and return its path.

    It holds the objective, k, the timestep sampling, the intervals (inclusive, 0-indexed) and
    their widths, the total cost (null if the objective optimises none), T and the schedule.
    """
    record = {
        **clustering.to_dict(),
        "sampling": sampling,
        "timesteps": timesteps,
        "schedule": schedule,
    }
    path = run_dir / CLUSTERS_FILE
    with atomic_write(path, text=True) as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
    return path
