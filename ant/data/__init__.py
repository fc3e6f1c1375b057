"""Data: sources, packing into WebDataset shards, and the sharded DDP loader.

The names below are imported from their modules on first access, so importing this package (as
plugin registration does) imports no torch. ``pack`` is imported from :mod:`ant.data.pack`: a lazy
name cannot share its name with a sub-module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ant.core.registry import lazy_exports

if TYPE_CHECKING:
    from ant.data.decode import UNLABELLED
    from ant.data.loader import ShardLoader, Skipped, make_loader
    from ant.data.meta import DatasetMeta, read_meta
    from ant.data.sources import DataSource, open_source, parse_source_spec
    from ant.data.writer import write_array_shards

_EXPORTS = {
    "UNLABELLED": "decode",
    "ShardLoader": "loader",
    "Skipped": "loader",
    "make_loader": "loader",
    "DatasetMeta": "meta",
    "read_meta": "meta",
    "DataSource": "sources",
    "open_source": "sources",
    "parse_source_spec": "sources",
    "write_array_shards": "writer",
}
__all__ = [
    "UNLABELLED",
    "DataSource",
    "DatasetMeta",
    "ShardLoader",
    "Skipped",
    "make_loader",
    "open_source",
    "parse_source_spec",
    "read_meta",
    "write_array_shards",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
