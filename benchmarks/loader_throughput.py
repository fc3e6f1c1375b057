"""Samples per second of the shard loader alone (no model), on packed digits or given shards.

python benchmarks/loader_throughput.py --workers 2 --batch-size 256 --batches 200
python benchmarks/loader_throughput.py --shards /data/imagenet64 --workers 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ant.data import make_loader
from ant.data.pack import pack


def parse_args() -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="packed folder, brace pattern or URL (default: digits)")
    parser.add_argument(
        "--image-size", type=int, default=32, help="image size when packing digits (default 32)"
    )
    parser.add_argument("--batches", type=int, default=200, help="timed batches (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (default 5)")
    parser.add_argument("--batch-size", type=int, default=256, help="per-rank batch (default 256)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--shuffle-buffer", type=int, default=1000, help="(default 1000)")
    parser.add_argument("--hflip", action="store_true", help="random horizontal flips")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def measure(shards: str, args: argparse.Namespace) -> tuple[int, float]:
    """Samples read and seconds taken over ``args.batches`` batches after the warm-up."""
    loader = make_loader(
        shards,
        batch_size=args.batch_size,
        rank=0,
        world_size=1,
        seed=args.seed,
        epoch_samples=(args.batches + args.warmup) * args.batch_size,
        shuffle_buffer=args.shuffle_buffer,
        hflip=args.hflip,
        num_workers=args.workers,
    )
    samples = 0
    start = time.perf_counter()
    for index, (x, _) in enumerate(loader):
        if index == args.warmup:
            samples = 0
            start = time.perf_counter()
        samples += x.shape[0]
    return samples, time.perf_counter() - start


def main() -> None:
    """Pack digits when no shards are given, then time the loader."""
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards
        if shards is None:
            shards = str(Path(tmp) / "digits")
            pack("digits", shards, image_size=args.image_size, shard_size=500)
        samples, seconds = measure(shards, args)
    print(
        f"{samples} samples in {seconds:.2f} s: {samples / seconds:,.0f} samples/s "
        f"(batch {args.batch_size}, {args.workers} workers, shuffle buffer {args.shuffle_buffer})"
    )


if __name__ == "__main__":
    main()
