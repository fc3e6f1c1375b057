"""Cost of every registered method against vanilla: steps/s and peak memory, in one process.

The same measurement as ``step_throughput.py`` (same model, batch and alternating timed rounds),
over all registered methods by default. Gradient methods get their k per-cluster gradients from
one grouped backward pass unless ``--task-grads vmap`` or ``--task-grads backward``.

python benchmarks/method_overhead.py                       # DiT-T/2 on 8x8x1, batch 100, k = 5
python benchmarks/method_overhead.py --task-grads grouped --methods vanilla,pcgrad,cagrad,imtl \
    --json                                                 # one JSON object per method
python benchmarks/method_overhead.py --methods vanilla,uw+conflict,nashmtl:update_every=1
python benchmarks/method_overhead.py --model DiT-B/2 --input-size 32 --channels 4 \
    --classes 1000 --batch 256 --precision bf16 --device cuda
"""

from __future__ import annotations

from step_throughput import main

if __name__ == "__main__":
    main(default_methods="all")
