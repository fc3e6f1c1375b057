"""Cost of every registered method against vanilla: steps/s and peak memory, in one process.

The same measurement as ``step_throughput.py`` (same model, batch and alternating timed rounds),
over all registered methods by default. Gradient methods get their k per-cluster gradients by
``vmap`` unless ``--task-grads backward``.

python benchmarks/method_overhead.py                       # DiT-T/2 on 8x8x1, batch 100, k = 5
python benchmarks/method_overhead.py --model DiT-B/2 --input-size 32 --channels 4 \
    --classes 1000 --batch 256 --precision bf16 --device cuda
"""

from __future__ import annotations

from step_throughput import main

if __name__ == "__main__":
    main(default_methods="all")
