"""Speed of exact interval clustering (the O(k T^2) dynamic programme) for each objective.

Times ``objective.cluster(space, k)`` (prefix sums plus the dynamic programme) for every T, k and
objective, best of several runs, and prints a table in milliseconds. The gradient objective uses a
random symmetric 100 x 100 group-level affinity expanded to T x T (expansion not timed).

python benchmarks/clustering_speed.py
python benchmarks/clustering_speed.py --timesteps 1000 --ks 5 --repeats 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from ant.clustering import (
    GradientObjective,
    Objective,
    SNRObjective,
    TaskSpace,
    TimestepObjective,
    expand_affinity,
)

OBJECTIVES: dict[str, Objective] = {
    "timestep": TimestepObjective(),
    "snr (log SNR)": SNRObjective("log_snr"),
    "gradient": GradientObjective(),
}


def parse_args() -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="100,1000,4000", help="comma-separated T values")
    parser.add_argument("--ks", default="2,5,10", help="comma-separated k values")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell; the best counts")
    parser.add_argument("--schedule", choices=["linear", "cosine"], default="cosine")
    return parser.parse_args()


def best_seconds(objective: Objective, space: TaskSpace, k: int, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``objective.cluster(space, k)``, in seconds."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        objective.cluster(space, k)
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    """Time every (objective, T, k) cell and print the table."""
    args = parse_args()
    timesteps = [int(v) for v in args.timesteps.split(",")]
    ks = [int(v) for v in args.ks.split(",")]
    rng = np.random.default_rng(0)
    groups = rng.uniform(-1.0, 1.0, size=(100, 100))
    groups = (groups + groups.T) / 2
    table = Table(
        title=f"interval clustering, {args.schedule} schedule: best of {args.repeats} (ms)"
    )
    table.add_column("objective")
    table.add_column("T", justify="right")
    for k in ks:
        table.add_column(f"k = {k}", justify="right")
    for name, objective in OBJECTIVES.items():
        for size in timesteps:
            affinity = expand_affinity(groups, size) if size % 100 == 0 else None
            space = TaskSpace.from_schedule(args.schedule, size, affinity)
            if affinity is None and isinstance(objective, GradientObjective):
                continue
            cells = [f"{1000 * best_seconds(objective, space, k, args.repeats):.1f}" for k in ks]
            table.add_row(name, str(size), *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
