"""Cost of the per-step stop vote: DDP training steps on 2 ranks with and without it.

Both ranks train the same DDP model (``step_throughput.py``'s model and batch options) in
alternating rounds: plain steps, then steps each followed by the trainer's ``StopVote`` (a
one-element all-reduce, read one step later). Rank 0 prints the fastest round of each and their
ratio, and the cost of one vote alone. gloo on the CPU; NCCL with ``--device cuda`` on 2 GPUs.

python benchmarks/stop_vote.py                             # DiT-T/2, digits-sized, batch 100
python benchmarks/stop_vote.py --model DiT-B/2 --input-size 32 --channels 4 --classes 1000 \
    --batch 256 --precision bf16 --device cuda
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from step_throughput import build, make_batch, parse_args, synchronize
from torch.nn.parallel import DistributedDataParallel

from ant.core.runtime import Runtime
from ant.training.signals import StopFlag, StopVote
from ant.training.step import TrainStep

RANKS = 2


def _round(
    step: TrainStep, batch: tuple[torch.Tensor, torch.Tensor], n: int, vote: StopVote | None
) -> float:
    device = batch[0].device
    synchronize(device)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(n):
        step(batch[0], batch[1], measure=False)
        if vote is not None:
            vote()
    synchronize(device)
    return time.perf_counter() - start


def _worker(rank: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or RANKS) // RANKS))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=RANKS)
    ctx = Runtime(rank=rank, world_size=RANKS, local_rank=rank, device=device)
    step = build(args, "vanilla", ctx)
    step.model = DistributedDataParallel(step.model, device_ids=[rank] if cuda else None)
    args.batch //= RANKS
    batch = make_batch(args, device)
    vote = StopVote(StopFlag(), device, distributed=True)
    _round(step, batch, args.warmup, vote)
    plain, voting = [], []
    for _ in range(args.rounds):
        plain.append(_round(step, batch, args.steps, None))
        voting.append(_round(step, batch, args.steps, vote))
    calls = 200
    dist.barrier()
    start = time.perf_counter()
    for _ in range(calls):
        vote()
    synchronize(device)
    alone = (time.perf_counter() - start) / calls
    if rank == 0:
        per_step, with_vote = min(plain) / args.steps, min(voting) / args.steps
        print(f"{args.model}, batch {args.batch * RANKS} on {RANKS} {device.type} ranks")
        print(f"plain step       {per_step * 1e3:9.2f} ms")
        print(f"step + vote      {with_vote * 1e3:9.2f} ms   ratio {with_vote / per_step:.3f}")
        print(f"one vote alone   {alone * 1e6:9.1f} us   {alone / per_step:.2%} of a step")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    args = parse_args("vanilla")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    mp.spawn(_worker, args=(port, args), nprocs=RANKS, join=True)


if __name__ == "__main__":
    main()
