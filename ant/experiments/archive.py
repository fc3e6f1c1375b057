"""A sweep without its checkpoints: the small files that its results are computed from.

A digits sweep keeps about 100 MB of checkpoints per run; its results need only each finished
run's ``recipe.yaml``, ``metrics.jsonl`` and ``clusters.json`` and the sweep's ``sweep.json``.
:func:`archive_sweep` copies those into another folder and marks every copied run with
``archived.json``, so the archive can be kept in version control or shared, reported on with
``--report-only``, and used as the ``--out`` of a later sweep: archived runs count as finished
there, and the sweep trains only the runs that are missing (more seeds, more variants).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from ant.core.atomic import atomic_write
from ant.core.errors import AntError
from ant.core.logbook import METRICS_FILE
from ant.experiments.plan import ARCHIVE_FILE, FINISHED, RUNS_DIR, Plan, run_state
from ant.experiments.sweep import STATE_FILE

RUN_FILES = ("recipe.yaml", METRICS_FILE, "clusters.json")
"""What an archived run keeps; ``recipe.yaml`` and ``metrics.jsonl`` are required."""


def archive_sweep(plan: Plan, dest: Path) -> tuple[Plan, list[str]]:
    """Copy the finished runs of ``plan`` (and ``sweep.json``) into ``dest``.

    Returns the plan of the same sweep with ``dest`` as its folder (to write the archive's
    report with) and the names of the runs archived. Runs already in ``dest`` are replaced; runs
    that are not finished are left out, so an archive never holds a partial run.
    """
    source = plan.config.out.resolve()
    if dest.resolve() == source:
        raise AntError(f"--archive {dest} is the sweep's own --out: name another folder")
    archived = []
    for run in plan.runs:
        if run_state(run) != FINISHED:
            continue
        target = dest / RUNS_DIR / run.directory.name
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run.directory / name).is_file():
                shutil.copyfile(run.directory / name, target / name)
        with atomic_write(target / ARCHIVE_FILE, text=True) as handle:
            json.dump({"step": run.recipe.train.steps}, handle)
        archived.append(run.name)
    if (source / STATE_FILE).is_file():
        shutil.copyfile(source / STATE_FILE, dest / STATE_FILE)
    config = replace(plan.config, out=dest)
    runs = [replace(run, directory=dest / RUNS_DIR / run.directory.name) for run in plan.runs]
    return replace(plan, config=config, runs=runs), archived
