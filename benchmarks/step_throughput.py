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
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from ant.plugins import registry
from ant.recipes import load_recipe
from ant.training.build import build_train_step
from ant.training.distributed import DistContext, pick_device
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
        "--task-grads", choices=["vmap", "backward"], default="vmap", help="per-cluster gradients"
    )
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per method")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    return parser.parse_args()


def build(args: argparse.Namespace, method: str, ctx: DistContext) -> TrainStep:
    """A training step for ``method`` with the benchmark's model and batch."""
    recipe = load_recipe(
        "digits_dit",
        [
            f"model.name={args.model}",
            f"model.input_size={args.input_size}",
            f"model.in_channels={args.channels}",
            f"model.num_classes={args.classes}",
            *(f"model.{option}" for option in args.model_option),
            f"method={{name: {method}}}",
            f"clustering.k={args.k}",
            f"train.global_batch_size={args.batch}",
            f"train.precision={args.precision}",
            f"train.compile={str(args.compile).lower()}",
            f"train.task_grads={args.task_grads}",
        ],
    )
    step, _ = build_train_step(recipe, ctx)
    if args.compile:
        step.model = torch.compile(step.model)  # type: ignore[assignment]
    return step


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


def peak_memory(args: argparse.Namespace, method: str, ctx: DistContext) -> float:
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
    names = registry("method").names() if spec == "all" else spec.split(",")
    names = [n.strip() for n in names if n.strip()]
    return ["vanilla", *[n for n in names if n != "vanilla"]]


def main(default_methods: str = "vanilla,uw") -> None:
    """Measure and print the table."""
    args = parse_args(default_methods)
    device = pick_device(args.device, 0)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
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
    seconds = dict.fromkeys(methods, float("inf"))
    for _ in range(args.rounds):
        for method in methods:
            seconds[method] = min(seconds[method], run(steps[method], batch, args.steps))

    base = methods[0]
    unit = "GiB (GPU peak)" if device.type == "cuda" else "GiB (process peak RSS)"
    options = "".join(f" {option}" for option in args.model_option)
    print(
        f"device {device}, model {args.model}{options}, batch {args.batch}, {args.precision}, "
        f"k {args.k}"
    )
    print(f"per-cluster gradients: {args.task_grads}; best of {args.rounds} rounds")
    print(f"{'method':<18} {'steps/s':>9} {'x ' + base:>10} {'memory':>9} {'x ' + base:>10}")
    for method in methods:
        rate = args.steps / seconds[method]
        base_rate = args.steps / seconds[base]
        print(
            f"{method:<18} {rate:>9.3f} {rate / base_rate:>10.3f} "
            f"{memory[method]:>9.3f} {memory[method] / memory[base]:>10.3f}"
        )
    print(f"memory unit: {unit}")


if __name__ == "__main__":
    main()
