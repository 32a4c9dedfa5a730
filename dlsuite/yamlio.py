"""YAML reading that reports errors with line numbers and reads ``1e-3`` as a float.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string; users write learning rates that way,
so the float resolver is widened to YAML 1.2's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dlsuite.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def loads(text: str, source: str = "<string>") -> Any:
    """Parse YAML text; malformed YAML raises :class:`ConfigError` naming the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML at {where}: {problem}") from None


def load(path: str | Path, what: str = "config file") -> Any:
    """Read and parse a YAML file; a missing file raises :class:`ConfigError` naming ``what`` it is."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    return loads(p.read_text(), str(p))


def parse_value(text: str) -> Any:
    """Parse the value of a ``--set key=value`` override as YAML (``1e-3`` -> float, ``[1,2]`` -> list)."""
    return loads(text, "--set") if text.strip() else ""


def dumps(data: Any) -> str:
    """Dump plain data as block-style YAML with keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
