"""Training-step throughput and peak memory of ANT methods against vanilla, in one process.

Every method trains the same model on the same synthetic batch; timed rounds alternate between
methods so drift of the machine (clock, other load) hits all of them alike, and each method's
rate is that of its fastest round (as timeit reports the minimum: other load only ever slows a
round down). Prints steps/s and peak memory per method and their ratios to vanilla.

python benchmarks/step_throughput.py                       # DiT-T/2 on 8x8x1 digits-sized input
python benchmarks/step_throughput.py --model DiT-L/2 --input-size 32 --channels 4 \
    --batch 240 --precision bf16 --device cuda              # the paper's DiT-L/2 step
python benchmarks/step_throughput.py --model ADM-T          # the tiny ADM U-Net of digits_adm
python benchmarks/step_throughput.py --model ADM --model-option model_channels=64 \
    --model-option channel_mult=[1,2]                       # any ADM option (recipe key)
python benchmarks/step_throughput.py --methods vanilla,uw+conflict,nashmtl:update_every=1 --json

A method is a registered name with optional ``:key=value`` options (``nashmtl:update_every=1``);
the suffix ``+conflict`` adds ``train.conflict_every=1``, which computes the per-cluster
gradients on every step (for UW: the grouped gradients alone, applied as UW's update).
Both the fastest round and the median round are reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from ant.core.plugins import registry
from ant.core.runtime import Runtime, pick_device
from ant.recipe import load_recipe
from ant.training.loop import build_train_step
from ant.training.step import TrainStep


def parse_args(default_methods: str = "vanilla,uw") -> argparse.Namespace:
    """The command-line options; ``--methods all`` means every registered method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-T/2", help="registered model name, e.g. ADM-T")
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option as in the recipe's model section (repeatable), e.g. num_res_blocks=1",
    )
    parser.add_argument("--input-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="global batch (default 100)")
    parser.add_argument("--k", type=int, default=5, help="timestep clusters (default 5)")
    parser.add_argument(
        "--methods", default=default_methods, help="comma-separated method names, or all"
    )
    parser.add_argument(
        "--task-grads",
        choices=["grouped", "vmap", "backward"],
        default="grouped",
        help="per-cluster gradients (default grouped)",
    )
    parser.add_argument(
        "--task-grads-dtype", choices=["fp32", "bf16"], default="fp32", help="grouped buffer"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per method")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per method")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    return parser.parse_args()


def method_overrides(spec: str) -> list[str]:
    """Recipe overrides of a method spec ``name[:key=value,...][+conflict]``."""
    conflict = spec.endswith("+conflict")
    spec = spec.removesuffix("+conflict")
    name, _, options = spec.partition(":")
    overrides = [f"method={{name: {name}}}"]
    overrides += [f"method.{option}" for option in options.split(",") if option]
    if conflict:
        overrides.append("train.conflict_every=1")
    return overrides


def build(args: argparse.Namespace, method: str, ctx: Runtime) -> TrainStep:
    """A training step for ``method`` with the benchmark's model and batch."""
    recipe = load_recipe(
        "digits_dit",
        [
            f"model.name={args.model}",
            f"model.input_size={args.input_size}",
            f"model.in_channels={args.channels}",
            f"model.num_classes={args.classes}",
            *(f"model.{option}" for option in args.model_option),
            *method_overrides(method),
            f"clustering.k={args.k}",
            f"train.global_batch_size={args.batch}",
            f"train.precision={args.precision}",
            f"train.compile={str(args.compile).lower()}",
            f"train.task_grads={args.task_grads}",
            f"train.task_grads_dtype={args.task_grads_dtype}",
        ],
    )
    step, _ = build_train_step(recipe, ctx)
    if args.compile:
        step.model = torch.compile(step.model)  # type: ignore[assignment]
    return step


def buffer_gib(step: TrainStep) -> float:
    """Size (GiB) of the step's ``[k, P]`` per-cluster gradient buffer (0 if it has none)."""
    rows = step.task_gradient_buffer
    return 0.0 if rows is None else rows.numel() * rows.element_size() / 2**30


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(step: TrainStep, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> float:
    """Seconds for ``n`` steps, including the device's queued work."""
    device = batch[0].device
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step(batch[0], batch[1], measure=False)
    synchronize(device)
    return time.perf_counter() - start


def peak_memory(args: argparse.Namespace, method: str, ctx: Runtime) -> float:
    """Peak memory (GiB) of a few steps of ``method``.

    On a GPU: the allocator's peak. On the CPU, where torch keeps no such statistic: the peak
    resident size of a fresh child process that runs only this method.
    """
    if ctx.device.type == "cuda":
        step = build(args, method, ctx)
        batch = make_batch(args, ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
        run(step, batch, 3)
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30
        del step
        torch.cuda.empty_cache()
        return peak
    child = [sys.executable, __file__, *sys.argv[1:], "--memory-of", method]
    out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def make_batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed synthetic batch (throughput does not depend on the pixel values)."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    x = torch.randn(shape, generator=generator)
    y = torch.randint(0, max(args.classes, 1), (args.batch,), generator=generator)
    return x.to(device), y.to(device)


def method_names(spec: str) -> list[str]:
    """The methods to compare, vanilla first (``all``: every registered method)."""
    names = registry("method").names() if spec == "all" else split_methods(spec)
    names = [n.strip() for n in names if n.strip()]
    return ["vanilla", *[n for n in names if n != "vanilla"]]


def split_methods(spec: str) -> list[str]:
    """Comma-separated method specs; a comma inside ``name:a=1,b=2`` options stays with it."""
    names: list[str] = []
    for piece in spec.split(","):
        if "=" in piece and ":" not in piece and names:
            names[-1] += f",{piece}"
        else:
            names.append(piece)
    return names


def main(default_methods: str = "vanilla,uw") -> None:
    """Measure and print the table."""
    args = parse_args(default_methods)
    device = pick_device(args.device)
    ctx = Runtime(device=device)
    if args.memory_of:
        run(build(args, args.memory_of, ctx), make_batch(args, device), 3)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return
    methods = method_names(args.methods)
    memory = {method: peak_memory(args, method, ctx) for method in methods}
    batch = make_batch(args, device)

    steps = {m: build(args, m, ctx) for m in methods}
    for method in methods:
        run(steps[method], batch, args.warmup)
    rounds: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(args.rounds):
        for method in methods:
            rounds[method].append(run(steps[method], batch, args.steps))

    base = methods[0]
    fastest = {m: args.steps / min(rounds[m]) for m in methods}
    median = {m: args.steps / statistics.median(rounds[m]) for m in methods}
    rows = [
        {
            "method": method,
            "task_grads": args.task_grads,
            "steps_per_s": fastest[method],
            "ratio": fastest[method] / fastest[base],
            "median_steps_per_s": median[method],
            "median_ratio": median[method] / median[base],
            "peak_mem": memory[method],
            "mem_ratio": memory[method] / memory[base],
            "buffer_gib": buffer_gib(steps[method]),
        }
        for method in methods
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    unit = "GiB (GPU peak)" if device.type == "cuda" else "GiB (process peak RSS)"
    options = "".join(f" {option}" for option in args.model_option)
    print(
        f"device {device}, model {args.model}{options}, batch {args.batch}, {args.precision}, "
        f"k {args.k}"
    )
    print(f"per-cluster gradients: {args.task_grads}; {args.rounds} alternating rounds")
    print(
        f"{'method':<26} {'steps/s':>9} {'x ' + base:>10} {'median x':>9} {'memory':>9} "
        f"{'x ' + base:>10}"
    )
    for row in rows:
        print(
            f"{row['method']:<26} {row['steps_per_s']:>9.3f} {row['ratio']:>10.3f} "
            f"{row['median_ratio']:>9.3f} {row['peak_mem']:>9.3f} {row['mem_ratio']:>10.3f}"
        )
    print(f"memory unit: {unit}; [k, P] buffer: {max(r['buffer_gib'] for r in rows):.3f} GiB")


if __name__ == "__main__":
    main()
