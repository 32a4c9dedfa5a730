"""The package's stages import only downwards, so no import circle spans two folders.

Every ``import`` in every module counts, those inside functions too: a lazy import is still a
dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dlsuite"

#: Stages from the bottom up; a module may import its own stage and those below it. Top-level modules
#: name their own stage (``build``), folders theirs (``data``). ``tracking`` owns the MLflow record and
#: imports no other stage, so everything that records (runner, studies, reports) can use it.
LAYERS: list[set[str]] = [
    {"errors", "yamlio", "registry", "config", "paths"},
    {"tracking"},
    {"data"},
    {"models"},
    {"transfer"},
    {"techniques"},
    {"tasks"},
    {"build"},
    {"population"},
    {"runner"},
    {"hpo"},
    {"reports"},
    {"catalog", "cli", "cli_study", "cli_compare", "cli_tune", "cli_ui", "cli_server", "__main__", "__init__"},
]
RANK = {stage: i for i, group in enumerate(LAYERS) for stage in group}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def edges() -> set[tuple[str, str, str]]:
    """``(importing stage, imported stage, file)`` for every import of a dlsuite module."""
    out = set()
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        src = _stage(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "dlsuite"]
            for name in names:
                if name.startswith("dlsuite."):
                    out.add((src, _stage(name), str(path.relative_to(PKG.parent))))
    return out


def test_every_stage_is_placed() -> None:
    stages = {
        p.stem if p.is_file() else p.name for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert stages <= set(RANK), f"place these in LAYERS: {sorted(stages - set(RANK))}"


def test_stages_import_only_downwards() -> None:
    upward = sorted(f"{f}: {s} imports {d}" for s, d, f in edges() if RANK[d] > RANK[s])
    assert upward == []
