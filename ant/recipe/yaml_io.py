"""YAML reading for recipes: YAML 1.2 floats (``1e-4`` is a number) and no duplicate keys."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ant.core.errors import AntError

# YAML 1.1 (PyYAML) needs a dot in a float, so ``1e-4`` would load as a string; YAML 1.2 does not.
_FLOAT_12 = re.compile(
    r"""^[-+]?(?:
        [0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
      | [0-9][0-9_]*[eE][-+]?[0-9]+
      | \.[0-9_]+(?:[eE][-+]?[0-9]+)?
    )$""",
    re.X,
)


class RecipeLoader(yaml.SafeLoader):
    """A safe loader that reads ``1e-4`` as a float and rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text``; a syntax error becomes one line naming ``source`` and the position."""
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise AntError(f"{source}: invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise AntError(f"{source}: invalid YAML: {exc}") from None


def parse_value(text: str) -> Any:
    """Parse one override value as YAML (``1e-4`` -> float, ``[1, 2]`` -> list, ``x`` -> str)."""
    if text == "":
        return None
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError:
        return text


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in their given order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
