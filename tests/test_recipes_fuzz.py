"""Fuzzing: random malformed recipes never produce a traceback, only exit code 0 or 2."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ant.cli import cli

SECTIONS = [
    "model",
    "diffusion",
    "data",
    "clustering",
    "method",
    "optim",
    "train",
    "sample",
    "eval",
]
KEYS = ["name", "lr", "steps", "k", "objective", "shards", "base", "seed", "betas", "timesteps"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1e-4", "uw", "DiT-S/2", "cosine", "[1, 2", "{a: 1}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)
documents = st.dictionaries(
    st.sampled_from(SECTIONS) | st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=4
)
overrides = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from([*SECTIONS, *[f"{s}.{k}" for s in SECTIONS for k in KEYS]]),
        st.text(max_size=8),
    )
    | st.text(max_size=10),
    max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents, extra=overrides, raw_text=st.one_of(st.none(), st.text(max_size=40)))
def test_random_recipes_never_traceback(
    document: dict[object, object], extra: list[str], raw_text: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(raw_text if raw_text is not None else yaml.safe_dump(document))
        result = CliRunner().invoke(cli, ["recipe", "validate", str(path), *extra])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    if result.exit_code == 2:
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1, result.output
