"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ant.data.pack import pack


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits packed into 4 real WebDataset shards."""
    out = tmp_path_factory.mktemp("digits") / "shards"
    pack("digits", out, shard_size=500)
    return out
