"""Model knobs as a user meets them: renamed and out-of-range knobs are refused at validation time,
by ``train``, ``study run --check`` and config loading alike, in one line, with nothing written; and
``dlsuite.models`` validates knobs with torch alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlsuite.build import load_run_config
from dlsuite.cli import main
from dlsuite.errors import ConfigError
from dlsuite.models import MODELS, list_models
from dlsuite.models.api import model_knobs
from dlsuite.reports.doctor import CAPACITY_KNOBS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.channels=8", "model.channels was renamed to model.width (model 'cnn')"),
        ("model.dropout=1.5", "model.dropout must be >= 0 and < 1, got 1.5 (model 'cnn')"),
        ("model.width=0", "model.width must be >= 1, got 0 (model 'cnn')"),
        ("model.pool=median", "model.pool must be one of 'none', 'max', 'avg', got 'median' (model 'cnn')"),
    ],
)
def test_config_refuses_renamed_and_out_of_range_knobs(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_run_config(None, [override])


def test_a_preset_takes_its_familys_knobs() -> None:
    cfg = load_run_config(ROOT / "configs" / "mnist1d_cnn.yaml", ["model.width=16"])
    assert cfg.model.name == "mnist1d_cnn" and cfg.model.knobs == {"width": 16}
    with pytest.raises(ConfigError, match=re.escape("model.depth must be >= 1, got 0 (model 'mnist1d_cnn')")):
        load_run_config(ROOT / "configs" / "mnist1d_cnn.yaml", ["model.depth=0"])


def test_train_with_an_old_knob_name_exits_2_in_one_line(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(ROOT / "configs" / "models" / "gru.yaml"), "--set", "model.hidden=32"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dlsuite: error: invalid config ") and len(err.splitlines()) == 1
    assert err.endswith("gru.yaml: model.hidden was renamed to model.width (model 'gru')")
    assert not Path("mlruns").exists()


def test_study_check_refuses_a_space_beyond_a_knobs_range(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 17, point 4: every trial above 1 would fail at build time and eat the budget; --check says so.
    study = tmp_path / "too_much_dropout.yaml"
    study.write_text(
        f"name: too_much_dropout\nbase: {ROOT / 'configs' / 'mnist1d_cnn.yaml'}\n"
        "space:\n  model.dropout: {type: float, low: 0.0, high: 1.5}\n"
        "metric: best_val_acc\nn_trials: 2\n"
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["study", "run", str(study), "--check"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "'model.dropout' = 1.5 is refused" in err and "model.dropout must be >= 0 and < 1, got 1.5" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, no study journal, no report
    # The same space inside the knob's range passes the check.
    study.write_text(study.read_text().replace("high: 1.5", "high: 0.5"))
    assert main(["study", "run", str(study), "--check"]) == 0


_ISOLATION = """
import json, sys
import dlsuite.models as m
from dlsuite.models.api import check_knobs
from dlsuite.errors import ConfigError
from dlsuite.models import MODELS, list_models
from dlsuite.models.api import model_knobs
m.create_model("mnist1d_cnn", (1, 40), 10, width=4)
check_knobs("resnet", {"width": 8, "dropout": 0.5})
try:
    check_knobs("cnn", {"channels": 8})
    refused = None
except ConfigError as exc:
    refused = str(exc)
heavy = ("lightning", "mlflow", "optuna", "timm", "torchvision", "matplotlib", "scipy")
print(json.dumps({"loaded": sorted(h for h in heavy if h in sys.modules), "refused": refused}))
"""


def test_models_import_and_check_knobs_with_torch_alone() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _ISOLATION], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "refused": "model.channels was renamed to model.width (model 'cnn')"}


def test_the_doctor_proposes_knobs_models_have() -> None:
    zoo = [n for n in list_models() if MODELS.get(n).__module__.startswith("dlsuite.models.")]
    for knob in CAPACITY_KNOBS:
        assert any(knob in model_knobs(n) for n in zoo), f"the doctor proposes {knob!r}, which no model has"
    for name in zoo:
        knobs = model_knobs(name)
        assert any(isinstance(knobs.get(k), int) for k in CAPACITY_KNOBS), f"no capacity knob for {name}"
