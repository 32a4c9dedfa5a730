"""Every shipped ``studies/compare_*.yaml``: each variant's run config validates, and each variant trains
for one short epoch. Variants naming a model that is not registered (yet) are skipped by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsuite.errors import ConfigError
from dlsuite.hpo.spec import build_study_spec, load_study_spec
from dlsuite.runner.run import train
from dlsuite.yamlio import load

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("compare_*.yaml"))
CASES = [(p, v) for p in STUDIES for v in (load(p) or {}).get("variants", {})]


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
    spec = load_study_spec(path)
    assert spec.name == path.stem and spec.type == "compare"
    assert load(path).get("seeds") == [0, 1, 2, 3, 4]  # the default 5 seeds, stated
    assert path.read_text().startswith("# Claim"), "each study states the claim it tests"


@pytest.mark.parametrize(("path", "variant"), CASES, ids=lambda x: x.stem if isinstance(x, Path) else x)
def test_variant_config_validates(path: Path, variant: str) -> None:
    cfg = load_study_spec(path).run_config(variant=variant)
    assert cfg.data.name == "mnist1d"


def test_a_bad_variant_is_refused() -> None:
    study = {"name": "x", "type": "compare", "base": {}, "variants": {"a": ["model.widht=3"]}}
    with pytest.raises(ConfigError, match="widht"):
        build_study_spec(study).run_config(variant="a")
    with pytest.raises(ConfigError, match=r"variant: unknown key \(did you mean 'variants'\?\)"):
        build_study_spec({**study, "variant": {}}, "x")


def test_every_variant_trains_one_short_epoch(store: str) -> None:
    for path in STUDIES:
        spec = load_study_spec(path)
        for variant in spec.variants:
            cfg = spec.run_config(variant=variant)
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
        load_study_spec(p)
