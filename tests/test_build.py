"""The composition root: validation is complete, light, and agrees with what the run builds."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlsuite.build import ACCELERATORS, MODEL_OUTPUTS, STRATEGIES, load_run_config, model_output
from dlsuite.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("lightning", "mlflow", "optuna", "timm", "torchvision", "matplotlib", "scipy")


def test_loading_and_validating_every_shipped_config_and_study_imports_nothing_heavy() -> None:
    # In a fresh interpreter: this process has imported everything already.
    code = f"""
import json, sys
from pathlib import Path
import dlsuite.config as c
c.load_config({str(REPO / "configs" / "mnist1d_cnn.yaml")!r})
after_load = sorted(m for m in {HEAVY!r} if m in sys.modules)
torch_after_load = "torch" in sys.modules
from dlsuite.build import load_run_config
from dlsuite.hpo.spec import load_study_spec
for p in sorted(Path({str(REPO)!r}).glob("configs/**/*.yaml")):
    load_run_config(p)
for p in sorted(Path({str(REPO)!r}).glob("studies/*.yaml")):
    load_study_spec(p)
print(json.dumps([after_load, torch_after_load, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    after_load, torch_after_load, after_all = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_load == [] and not torch_after_load  # the config is data: not even torch
    assert after_all == []


def test_cli_check_and_list_import_nothing_heavy() -> None:
    code = f"""
import json, sys
from dlsuite.cli import main
main(["list", "models"])
main(["list"])
main(["study", "run", {str(REPO / "studies" / "quick.yaml")!r}, "--check"])
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_model_outputs_what_the_task_table_says() -> None:
    from dlsuite.models import MODELS, create_model
    from dlsuite.models.api import model_inputs

    # the suite's own models (other tests register test models; transfer is tested in test_transfer)
    for name in [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("dlsuite.models.")]:
        tokens = "tokens" in model_inputs(name)
        shape: tuple[int, ...] = (6,) if tokens else (1, 32)
        torch.manual_seed(0)
        model = create_model(name, shape, 5).eval()
        x = torch.randint(0, 5, (2, *shape)) if tokens else torch.randn(2, *shape)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        kind = model_output(name)
        if kind == "logits":
            assert out.shape == (2, 5), name
        elif kind == "reconstruction":
            assert out.shape == x.shape, name
        else:
            assert out.shape[0] == 2 and out.shape[-1] == 5 and out.dim() == 3, name
    assert set(MODEL_OUTPUTS) <= set(MODELS.names())


def test_declared_sampler_options_are_optuna_s_own() -> None:
    from dlsuite.hpo.samplers import OPTIONS, PRUNERS, SAMPLERS

    assert set(OPTIONS) == set(SAMPLERS.names()) | set(PRUNERS.names())
    for name in OPTIONS:
        cls = SAMPLERS.get(name) if name in SAMPLERS else PRUNERS.get(name)
        assert set(OPTIONS[name]) <= set(inspect.signature(cls).parameters), name


def test_declared_strategies_and_accelerators_are_lightning_s_own() -> None:
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())
    assert set(ACCELERATORS) - {"auto", "gpu"} <= set(AcceleratorRegistry.available_accelerators())


def test_declared_dataset_args_match_each_data_module() -> None:
    from mnist1d.data import get_dataset_args

    from dlsuite.data import DATASETS
    from dlsuite.data.args import defaults

    for name in DATASETS.names():
        assert defaults(name) == DATASETS.get(name).ARGS, name
    package = dict(get_dataset_args(as_dict=True))
    package.pop("url")
    assert {k: v for k, v in defaults("mnist1d").items() if k != "val_samples"} == package


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.args.shuffle_seq=maybe"], "data.args.shuffle_seq: Input should be a valid boolean"),
        (["data.args.num_samples=0"], "data.args.num_samples: Input should be greater than or equal to 2"),
        (["seed=4294967296"], "seed: Input should be less than or equal to 4294967295"),
        (["tracking.experiment="], "tracking.experiment: String should have at least 1 character"),
        (["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is unknown"),
        (["trainer.strategy=ddpp"], "trainer.strategy='ddpp' is unknown"),
        (["trainer.checkpoint_monitor=val_acc", "trainer.checkpoint_mode=min"], "is better higher"),
        (["regularization.early_stopping={monitor: val_los}"], "logs no such metric"),
        (["task.name=reconstruction"], "task 'reconstruction' needs a model that outputs reconstruction"),
    ],
)
def test_validation_refuses_before_anything_is_built(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_run_config(None, overrides)
    assert message in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_that_is_not_there_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"trainer.accelerator=.gpu. but this machine has no such device"):
        load_run_config(None, ["trainer.accelerator=gpu"])


def test_data_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"data.root .* is a file; it must be a folder"):
        load_run_config(None, [f"data.root={f}"])


def test_task_specs_declare_what_each_task_logs() -> None:
    from dlsuite.tasks import TASK_SPECS, TASKS

    for name, spec in TASK_SPECS.items():
        logged = {m.removeprefix("val_") for m in spec.val_metrics}
        assert set(TASKS.get(name).stage_metric_names()) == logged, name
