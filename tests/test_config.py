"""The typed run config: YAML, overrides, and clear errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsuite.build import load_run_config
from dlsuite.config import load_config
from dlsuite.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_the_paper_recipe() -> None:
    cfg = load_config(REPO / "configs" / "mnist1d_cnn.yaml")
    assert (cfg.data.name, cfg.model.name, cfg.optim.name) == ("mnist1d", "mnist1d_cnn", "adam")
    assert cfg.optim.lr == pytest.approx(1e-2)  # "1e-2" in YAML is a float, not a string
    assert cfg.data.batch_size == 100
    assert cfg.name == "mnist1d_cnn"


def test_overrides_parse_values_and_reach_nested_sections() -> None:
    cfg = load_config(
        None, ["optim.lr=3e-4", "optim.schedule.name=cosine", "model.dropout=0.25", "trainer.devices=[0]"]
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.schedule.name == "cosine"
    assert cfg.model.knobs == {"dropout": 0.25}
    assert cfg.trainer.devices == [0]


def test_yaml_round_trip_gives_the_same_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.width=7", "optim.name=sgd", "optim.momentum=0.9", "optim.nesterov=true"])
    path = tmp_path / "again.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).to_dict() == cfg.to_dict()
    assert cfg.flat()["optim.momentum"] == 0.9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=0.1"], "unknown key 'optim.lrr' (did you mean 'lr'?)"),
        (["trainer.max_epoch=3"], "did you mean 'max_epochs'?"),
        (["optim.lr=-0.1"], "optim.lr: Input should be greater than 0"),
        (["data.batch_size=0"], "data.batch_size: Input should be greater than or equal to 1"),
        (["data.batch_size=abc"], "data.batch_size: Input should be a valid integer"),
        (["model.dropout=1.5"], "dropout"),  # refused when the model is checked
        (["model.name=resnot"], "unknown model 'resnot'"),
        (["optim.name=adamm"], "unknown optimizer 'adamm' (did you mean 'adam'?); valid: "),
        (["data.name=mnist2d"], "unknown dataset 'mnist2d'"),
        (["model.widht=3"], "model 'cnn' does not take knob 'widht'"),
        (["optim.momentum=0.9"], "optim.momentum does not apply to 'adam'; it applies to: "),
        (["optim.name=sgd", "optim.nesterov=true"], "nesterov needs momentum > 0"),
        (["data.args.noise=1"], "dataset 'mnist1d' does not take data.args.noise"),
        (["model.init=he"], "unknown init 'he'"),
        (["optim.schedule.name=cosine_warm"], "unknown schedule"),
        (["trainer.precision=8"], "trainer.precision"),
        (["novalue"], "not of the form key=value"),
    ],
)
def test_bad_values_name_what_is_wrong(overrides: list[str], message: str) -> None:
    from dlsuite.models import create_model

    with pytest.raises(ConfigError) as err:
        cfg = load_run_config(None, overrides)
        create_model(cfg.model.name, (1, 40), 10, **cfg.model.knobs)
    assert message in str(err.value)


def test_unknown_registry_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"valid: .*adam.*sgd"):
        load_run_config(None, ["optim.name=nope"])


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  name: mnist1d\n  batch_size: [1, 2\nmodel:\n  name: cnn\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at .*bad.yaml:\d+"):
        load_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/run.yaml")
