"""Does it reproduce the paper? Variants x seeds of one recipe, evaluated alike, tabulated, plotted.

The same as ``ant reproduce`` (``ant/experiments/``; docs/results.md): every variant x seed trains
as ``ant train --resume`` in OUT/runs/<variant>-s<seed>, the EMA model is evaluated every
``--eval-every`` steps with identical settings, and OUT/results.json, OUT/results.md and
OUT/curves_fd.png / curves_accuracy.png summarise them. Rerunning skips finished runs and
resumes interrupted ones.

python benchmarks/reproduce.py --recipe recipes/digits_dit.yaml --variants paper-digits \
    --seeds 0,1,2 --steps 600 --eval-every 60 --eval-samples 500 --out runs/reproduce-digits
python benchmarks/reproduce.py --recipe recipes/digits_dit.yaml --variants paper-digits \
    --affinity runs/aff/affinity/affinity.npy ...          # with the uw-gradient variant
python benchmarks/reproduce.py --recipe recipes/dit_l2_imagenet.yaml --variants paper-imagenet \
    --seeds 0 --steps 400000 --eval-every 50000 --eval-samples 10000 --metrics fid \
    --feature-extractor inception --sampler ddpm --sampler-steps 250 \
    --launcher "torchrun --nproc_per_node 8" --out runs/reproduce-imagenet
python benchmarks/reproduce.py --help                       # every option
"""

from __future__ import annotations

import sys

from ant.cli import cli


def main() -> None:
    """Run ``ant reproduce`` with this script's arguments."""
    cli.main(args=["reproduce", *sys.argv[1:]], prog_name="reproduce.py")


if __name__ == "__main__":
    main()
