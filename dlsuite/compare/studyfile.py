"""Reading compare-study files far enough to check every variant's run config.

The study runner (``dlsuite study run``) owns the full study schema; this module only resolves what a
compare study's trials will train: ``base`` (a mapping, or a run-config path relative to the study
file), then ``overrides``, then each variant's overrides, validated as a :class:`RunConfig`. The
shipped ``studies/compare_*.yaml`` and the studies ``dlsuite doctor`` writes are checked with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlsuite import yamlio
from dlsuite.config import RunConfig, apply_overrides, build_config
from dlsuite.errors import ConfigError

COMPARE_KEYS = ("name", "type", "base", "overrides", "variants", "seeds", "metric", "direction")


def resolve_base(study: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The study's base run config as plain data (a path is read relative to ``folder``)."""
    base = study.get("base") or {}
    if isinstance(base, str):
        path = Path(base) if Path(base).is_absolute() else folder / base
        if not path.is_file():
            raise ConfigError(f"study {study.get('name')!r}: base config not found: {path}")
        loaded = yamlio.load(path)
        base = dict(loaded) if isinstance(loaded, dict) else {}
        base.pop("name", None)
    if not isinstance(base, dict):
        raise ConfigError("a study's 'base' must be a mapping or the path of a run config")
    return base


def check_shape(study: Any, source: str) -> dict[str, Any]:
    """Refuse a file that is not a compare study (unknown keys, no variants, bad seeds)."""
    if not isinstance(study, dict):
        raise ConfigError(f"invalid study {source}: the top level must be a mapping")
    unknown = sorted(set(study) - set(COMPARE_KEYS))
    if unknown:
        raise ConfigError(f"invalid study {source}: unknown keys {unknown}; a compare study takes {COMPARE_KEYS}")
    if study.get("type") != "compare":
        raise ConfigError(f"invalid study {source}: type must be 'compare'")
    variants = study.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"invalid study {source}: 'variants' must map names to lists of key=value")
    for name, sets in variants.items():
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise ConfigError(f"invalid study {source}: variant {name!r} must be a list of 'key=value' strings")
    seeds = study.get("seeds", [0, 1, 2, 3, 4])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"invalid study {source}: 'seeds' must be a non-empty list of distinct ints")
    if study.get("direction", "maximize") not in ("maximize", "minimize"):
        raise ConfigError(f"invalid study {source}: direction must be 'maximize' or 'minimize'")
    return study


def variant_config(study: dict[str, Any], variant: str, folder: Path = Path()) -> RunConfig:
    """The validated run config of one variant (base, study overrides, variant overrides)."""
    data = apply_overrides(resolve_base(study, folder), list(study.get("overrides") or []))
    data = apply_overrides(data, list(study["variants"][variant]))
    data.setdefault("name", study.get("name"))
    return build_config(data, f"(study {study.get('name')}, variant {variant})")


def load_compare_study(path: str | Path) -> tuple[dict[str, Any], dict[str, RunConfig]]:
    """Read a compare-study file and validate each variant's run config; ConfigError on any problem."""
    p = Path(path)
    study = check_shape(yamlio.load(p), str(p))
    study.setdefault("name", p.stem)
    return study, {v: variant_config(study, v, p.parent) for v in study["variants"]}
