"""CPU time of ``ant`` commands that should start fast, against ``import torch`` in the same run.

Each command runs ``--repeats`` times as a fresh ``python -m ant`` process; the script prints the
median user + system CPU time of each, its ratio to a process that only imports torch, and
whether the command imported torch (from ``sys.modules`` at exit, via ``-X importtime``).

python benchmarks/startup.py
python benchmarks/startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COMMANDS: list[list[str]] = [
    ["--help"],
    ["plugins"],
    ["recipes"],
    ["recipe", "show", "recipes/digits_dit.yaml"],
    ["cluster", "--help"],
    ["train", "--help"],
    ["recipe", "validate", "recipes/digits_dit.yaml"],
]


def cpu_seconds(argv: list[str]) -> tuple[float, bool]:
    """CPU time (user + system) of one child process, and whether it imported torch."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    imported_torch = any(
        line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines()
    )
    return used, imported_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [cpu_seconds(["-c", "import torch"]) for _ in range(args.repeats)]
    reference = statistics.median(seconds for seconds, _ in runs)
    print(f"{'command':<48} {'CPU s':>7} {'/ import torch':>15}  torch imported")
    label = 'python -c "import torch"'
    print(f"{label:<48} {reference:7.2f} {1.0:15.2f}  yes")
    for command in COMMANDS:
        runs = [cpu_seconds(["-m", "ant", *command]) for _ in range(args.repeats)]
        median = statistics.median(seconds for seconds, _ in runs)
        imported = "yes" if any(torch for _, torch in runs) else "no"
        label = "ant " + " ".join(command)
        print(f"{label:<48} {median:7.2f} {median / reference:15.2f}  {imported}")


if __name__ == "__main__":
    main()
