"""The composition root: every check of a run config in one pass, and the one place a run is built.

``validate(cfg)`` is what ``dlsuite train``, ``study run --check``, every study runner and the doctor
call, so what ``--check`` accepts the run accepts. It builds nothing heavy: it reads the registries'
names and declared schemas (data arguments, task specs, model knobs) and imports at most torch, never
Lightning, MLflow, Optuna, timm, torchvision, matplotlib or scipy (a test checks ``sys.modules``).

``build_run(cfg)`` then builds the parts of a run, in order (data module, model, task), for
``train()`` to wire into a Trainer and an MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsuite.config import RunConfig, load_config
from dlsuite.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L
    import torch
    from torch import nn

    from dlsuite.data.base import InMemoryDataModule
    from dlsuite.tasks.components import Components

#: What a model produces, when not class logits ``(B, num_classes)``; a test builds every registered
#: model and checks its output against this table.
MODEL_OUTPUTS: dict[str, str] = {"autoencoder": "reconstruction", "attention_seq2seq": "tokens"}

#: ``trainer.strategy`` values (Lightning's registered strategy names that apply here; a test checks
#: each against Lightning's own registry).
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "ddp_find_unused_parameters_false",
    "ddp_spawn_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false",
    "fsdp",
    "single_device",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")

# Metrics where lower is better; every other monitored metric (accuracy, F1) is better higher.
_LOWER_IS_BETTER = ("loss", "mse", "kl")


def model_output(name: str) -> str:
    """What model ``name`` produces: ``logits``, ``tokens`` or ``reconstruction``."""
    return MODEL_OUTPUTS.get(name, "logits")


def validate(cfg: RunConfig, source: str = "") -> RunConfig:
    """Every check of ``cfg`` that can be made before anything is built or written; returns ``cfg``.

    Raises:
        ConfigError: one line naming the first problem and what is allowed.
    """
    try:
        _check_data(cfg)
        _check_model(cfg)
        _check_task(cfg)
        _check_optim(cfg)
        _check_techniques(cfg)
        _check_trainer(cfg)
    except ConfigError as exc:
        raise ConfigError(f"invalid config {source}: {exc}" if source else str(exc)) from None
    return cfg


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and :func:`validate` a run config (``dlsuite train``'s front door)."""
    cfg = load_config(path, overrides)
    return validate(cfg, str(path) if path is not None else "(defaults)")


# -- the checks, stage by stage ------------------------------------------------------------------------
def _check_data(cfg: RunConfig) -> None:
    from dlsuite.data import DATASETS
    from dlsuite.data.args import check_args
    from dlsuite.data.augment import AUGMENTATIONS, check_augmentation

    d = cfg.data
    DATASETS.check(d.name, what="dataset")
    check_args(d.name, d.args)
    if d.root is not None and Path(d.root).expanduser().exists() and not Path(d.root).expanduser().is_dir():
        raise ConfigError(f"data.root {d.root!r} is a file; it must be a folder (or a path to create)")
    for aug in d.augment:
        AUGMENTATIONS.check(aug.name, what="augmentation")
        check_augmentation(aug.name, aug.params)
    if d.fold is not None:
        if d.folds is None:
            raise ConfigError("data.fold needs data.folds (the number of folds)")
        if d.fold >= d.folds:
            raise ConfigError(f"data.fold={d.fold} must be in 0..{d.folds - 1}")


def _check_model(cfg: RunConfig) -> None:
    import dlsuite.transfer  # noqa: F401  (registers the transfer model)
    from dlsuite.models import INITS, MODELS
    from dlsuite.models.api import check_knobs
    from dlsuite.transfer.model import check_transfer_config

    m = cfg.model
    MODELS.check(m.name, what="model")
    INITS.check(m.init, what="init")
    check_knobs(m.name, {k: v for k, v in m.knobs.items() if v is not None})
    check_transfer_config(cfg)


def _check_task(cfg: RunConfig) -> None:
    from dlsuite.models import MODELS
    from dlsuite.tasks import TASK_SPECS, TASKS
    from dlsuite.techniques.losses import check_loss, create_loss

    TASKS.check(cfg.task.name, what="task")
    spec = TASK_SPECS[cfg.task.name]
    if model_output(cfg.model.name) != spec.model_output:
        fitting = [n for n in MODELS.names() if model_output(n) == spec.model_output]
        raise ConfigError(
            f"task {cfg.task.name!r} needs a model that outputs {spec.model_output}, and model "
            f"{cfg.model.name!r} does not; models that fit: {', '.join(fitting)}"
        )
    check_loss(cfg.task.loss, dict(cfg.task.loss_args), spec.targets, cfg.regularization.label_smoothing)
    if spec.targets != "none":
        create_loss(cfg)  # option values (task.loss_args) are checked by the loss itself
    t = cfg.trainer
    _check_monitor("trainer.checkpoint_monitor", t.checkpoint_monitor, t.checkpoint_mode, cfg.task.name)
    es = cfg.regularization.early_stopping
    if es is not None:
        _check_monitor("regularization.early_stopping.monitor", es.monitor, es.mode, cfg.task.name)


def _check_monitor(key: str, metric: str, mode: str, task: str) -> None:
    from dlsuite.tasks import TASK_SPECS

    logged = TASK_SPECS[task].val_metrics
    if metric not in logged:
        raise ConfigError(f"{key}={metric!r}: task {task!r} logs no such metric; it logs {', '.join(logged)}")
    want = "min" if metric.endswith(_LOWER_IS_BETTER) else "max"
    if mode != want:
        mode_key = "trainer.checkpoint_mode" if key.startswith("trainer") else key.replace("monitor", "mode")
        raise ConfigError(f"{key}={metric!r} is better {'lower' if want == 'min' else 'higher'}: set {mode_key}={want}")


def _check_optim(cfg: RunConfig) -> None:
    from dlsuite.techniques.optim import check_schedule, optimizer_kwargs

    # Checked against the optimiser's signature, not by building one: constructing a torch optimiser
    # imports torch._dynamo (seconds). Values of optim.args are checked by the optimiser when it is
    # built, which is still before anything is written.
    optimizer_kwargs(cfg.optim)
    check_schedule(cfg.optim.schedule)


def _check_techniques(cfg: RunConfig) -> None:
    from dlsuite.techniques.optim import check_snapshot

    r = cfg.regularization
    if r.swa is not None and r.ema is not None:
        raise ConfigError("regularization.swa and regularization.ema both replace the weights: choose one")
    if r.ensemble is not None and r.ensemble.method == "snapshot":
        check_snapshot(cfg)
        if r.swa is not None:
            raise ConfigError("a snapshot ensemble needs the cyclic schedule that regularization.swa replaces")


def _check_trainer(cfg: RunConfig) -> None:
    t = cfg.trainer
    if t.accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={t.accelerator!r} is unknown; valid: {', '.join(ACCELERATORS)}")
    if t.strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={t.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if t.accelerator in ("gpu", "cuda", "mps"):
        import torch

        have = (
            torch.cuda.device_count()
            if t.accelerator != "mps"
            else int(bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available())
        )
        if have == 0:
            raise ConfigError(
                f"trainer.accelerator={t.accelerator!r} but this machine has no such device; use cpu or auto"
            )
        wanted = t.devices if isinstance(t.devices, int) else len(t.devices) if isinstance(t.devices, list) else 0
        if wanted > have:
            raise ConfigError(f"trainer.devices={t.devices} but this machine has {have} {t.accelerator} device(s)")


# -- building ------------------------------------------------------------------------------------------
@dataclass
class RunParts:
    """The built parts of one run: data (prepared), the plain model, and the task wrapping it."""

    data: InMemoryDataModule
    model: nn.Module
    task: L.LightningModule


def build_run(cfg: RunConfig) -> RunParts:
    """Validate ``cfg``, then build its data module (loaded), model (initialised) and task.

    A missing dataset or a model that cannot take the data's shape fails here, before any MLflow run
    or checkpoint is written.
    """
    import lightning as L

    from dlsuite.data import create_datamodule
    from dlsuite.models import apply_init, create_model
    from dlsuite.tasks import create_task
    from dlsuite.techniques.speed import configure_backends, prepare_model

    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_backends(cfg.trainer)
    dm = create_datamodule(cfg.data, cfg.seed)
    dm.prepare()
    model = create_model(cfg.model.name, dm.input_shape, dm.num_classes, **cfg.model.knobs)
    apply_init(model, cfg.model.init, cfg.model.init_std)
    prepare_model(model, cfg.trainer)  # channels_last / torch.compile, in place
    parts = components(cfg, dm.input_shape)
    try:  # options passed through to the optimiser (optim.args) are checked by it, before anything is written
        parts.optimizer(model)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer {cfg.optim.name!r} refuses these settings: {exc}") from None
    task = create_task(cfg.task.name, model, parts, dm.num_classes, dm.input_shape)
    return RunParts(dm, model, task)


def components(cfg: RunConfig, input_shape: tuple[int, ...]) -> Components:
    """What the task of ``cfg`` trains with: loss, objective, optimiser and schedule factories."""
    from dlsuite.tasks import TASK_SPECS
    from dlsuite.tasks.components import Components
    from dlsuite.techniques.losses import create_loss
    from dlsuite.techniques.optim import create_optimizer, create_scheduler
    from dlsuite.techniques.regularizers import TrainObjective

    name = cfg.task.name
    optim = cfg.optim

    def optimizer(model: nn.Module) -> torch.optim.Optimizer:
        return create_optimizer(model, optim)

    def scheduler(opt: torch.optim.Optimizer, epochs: int, steps: int) -> dict[str, Any]:
        return create_scheduler(opt, optim.schedule, epochs, steps)

    return Components(
        optimizer=optimizer,
        scheduler=scheduler,
        loss=create_loss(cfg) if TASK_SPECS[name].targets != "none" else None,
        objective=TrainObjective(cfg, input_shape) if name == "classification" else None,
        options={"recon_loss": cfg.task.recon_loss, "kl_weight": cfg.task.kl_weight}
        if name == "reconstruction"
        else {},
        hparams=cfg.to_dict(),
    )


def describe(parts: RunParts) -> dict[str, Any]:
    """Facts about the built run, logged as params: data sizes, parameter count, cost."""
    return facts(parts.data, parts.model)


def facts(dm: Any, model: Any) -> dict[str, Any]:
    """:func:`describe` from a loaded data module and a model (a population logs its members' from one)."""
    from dlsuite.models import count_params
    from dlsuite.models.cost import model_cost

    return {**dm.describe(), "model.num_params": count_params(model), **model_cost(model, dm.splits["train"][0][:1])}
