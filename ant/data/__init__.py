"""Data: sources, packing into WebDataset shards, and the sharded DDP loader."""

from ant.data.decode import UNLABELLED
from ant.data.loader import ShardLoader, Skipped, make_loader
from ant.data.meta import DatasetMeta, read_meta
from ant.data.pack import pack
from ant.data.sources import DataSource, open_source, parse_source_spec
from ant.data.writer import write_array_shards

__all__ = [
    "UNLABELLED",
    "DataSource",
    "DatasetMeta",
    "ShardLoader",
    "Skipped",
    "make_loader",
    "open_source",
    "pack",
    "parse_source_spec",
    "read_meta",
    "write_array_shards",
]
