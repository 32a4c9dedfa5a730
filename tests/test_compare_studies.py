"""Every shipped ``studies/compare_*.yaml``: each variant's run config validates, and each variant trains
for one short epoch. Variants naming a model that is not registered (yet) are skipped by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsuite.compare.studyfile import check_shape, load_compare_study, variant_config
from dlsuite.errors import ConfigError
from dlsuite.models.api import MODELS
from dlsuite.train.run import train
from dlsuite.yamlio import load

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("compare_*.yaml"))
CASES = [(p, v) for p in STUDIES for v in (load(p) or {}).get("variants", {})]


def _missing_model(study: dict, variant: str) -> str | None:
    for item in study["variants"][variant]:
        key, _, value = item.partition("=")
        if key.strip() == "model.name" and value.strip() not in MODELS:
            return value.strip()
    return None


def test_the_shipped_compare_studies_exist() -> None:
    names = {p.stem for p in STUDIES}
    assert {
        "compare_initializations",
        "compare_activations",
        "compare_optimizers",
        "compare_normalization",
        "compare_architectures",
    } <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_shape(path: Path) -> None:
    study = check_shape(load(path), str(path))
    assert study["name"] == path.stem and study["type"] == "compare"
    assert study.get("seeds") == [0, 1, 2, 3, 4]  # the default 5 seeds, stated
    assert path.read_text().startswith("# Claim"), "each study states the claim it tests"


@pytest.mark.parametrize(("path", "variant"), CASES, ids=lambda x: x.stem if isinstance(x, Path) else x)
def test_variant_config_validates(path: Path, variant: str) -> None:
    study = load(path)
    missing = _missing_model(study, variant)
    if missing:
        pytest.skip(f"model {missing!r} is not registered in this checkout (it comes with the model zoo)")
    cfg = variant_config(study, variant, path.parent)
    assert cfg.data.name == "mnist1d"


def test_a_bad_variant_is_refused() -> None:
    study = {"name": "x", "type": "compare", "base": {}, "variants": {"a": ["model.widht=3"]}}
    with pytest.raises(ConfigError, match="widht"):
        variant_config(study, "a")
    with pytest.raises(ConfigError, match="unknown keys"):
        check_shape({**study, "variant": {}}, "x")


def test_every_variant_trains_one_short_epoch(store: str) -> None:
    for path in STUDIES:
        study = load(path)
        for variant in study["variants"]:
            if _missing_model(study, variant):
                continue
            cfg = variant_config(study, variant, path.parent)
            cfg.trainer.max_epochs = 1
            cfg.trainer.progress_bar = False
            cfg.data.train_samples = 200
            cfg.data.args = {**cfg.data.args, "val_samples": 200}
            cfg.tracking.enabled = False
            result = train(cfg)
            assert result.status == "FINISHED" and 0.0 <= result.metrics["test_acc"] <= 1.0, (path.stem, variant)


def test_load_compare_study_reports_unregistered_models_clearly(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("type: compare\nvariants:\n  a: [model.name=nosuchnet]\n")
    with pytest.raises(ConfigError, match="unknown model 'nosuchnet'"):
        load_compare_study(p)
