"""The typed run configuration: one object per run, read from YAML plus ``--set key=value`` overrides.

Sections follow the data flow: ``data`` -> ``model`` -> ``task`` (loss, metrics) -> ``optim`` (optimiser,
schedule, clipping) -> ``regularization`` -> ``trainer`` -> ``tracking``. This module is data only: it
imports nothing else of the suite. Types and ranges are checked here; names (``dlsuite list KIND``) and
everything across sections by :func:`dlsuite.build.validate`, before anything runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlsuite import yamlio
from dlsuite.errors import ConfigError, did_you_mean


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on assignment,
    and no string may be empty (an empty name or path is always a mistake)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, str_min_length=1)


class AugmentConfig(BaseModel):
    """One augmentation: a registered ``name`` and its parameters (``dlsuite list augmentations``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, str_min_length=1)

    name: str
    """Registered augmentation name."""

    @property
    def params(self) -> dict[str, Any]:
        """The augmentation's own parameters."""
        return dict(self.model_extra or {})


class DataConfig(Section):
    """Which dataset, how it is split, normalised, augmented and batched."""

    name: str = "mnist1d"
    """Registered dataset name (``dlsuite list datasets``)."""
    root: str | None = None
    """Folder holding files of on-disk datasets; default ``$DLSUITE_DATA`` or ``~/.cache/dlsuite/data``."""
    download: bool = True
    """Download on-disk datasets that are missing (needs internet); else fail naming the files expected."""
    batch_size: int = Field(100, ge=1)
    """Training batch size; the loss is averaged over it."""
    eval_batch_size: int = Field(1000, ge=1)
    """Batch size for validation and test (no gradients, so larger is cheaper)."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction of the training split held out for validation (fixed seed ``split_seed``)."""
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Fraction held out for test, for datasets that have no test split of their own (digits, folders)."""
    split_seed: int = 0
    """Seed of the train/val/test split; kept apart from ``seed`` so every run sees the same split."""
    train_samples: int | None = Field(None, ge=1)
    """Cap on training examples (the small-data regime where overfitting shows); ``null`` = all."""
    normalize: Literal["standard", "unit", "symmetric", "none"] = "standard"
    """``standard``: zero mean / unit std per channel from the training split; ``unit``: [0,1];
    ``symmetric``: [-1,1]; ``none``: raw values."""
    in_memory: Literal["auto", "always", "never"] = "auto"
    """Hold the dataset as tensors on the training device (fast path) or stream it with a DataLoader."""
    num_workers: int = Field(0, ge=0)
    """DataLoader workers, streaming path only."""
    image_size: int | None = Field(None, ge=1)
    """Resize images to this side length (image_folder; later also transfer learning)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Dataset-specific arguments passed through (e.g. mnist1d's ``num_samples``, ``noise``...)."""
    train_per_class: int | None = Field(None, ge=1)
    """Keep this many training examples of each class (few-label regime, seeded by ``split_seed``);
    ``null`` = all. Applied after ``train_samples``."""
    augment: list[AugmentConfig] = Field(default_factory=list)
    """Augmentations of training batches, applied in order on the device, e.g. ``[{name: hflip, p: 0.5}]``
    (``dlsuite list augmentations``). Validation and test data are never augmented."""
    folds: int | None = Field(None, ge=2)
    """k-fold cross-validation: the training and validation splits are pooled and cut into ``folds`` parts.
    With ``fold`` unset, a run trains every fold as a child of one parent run (mean and std recorded)."""
    fold: int | None = Field(None, ge=0)
    """Which fold (0-based) is the validation part; set by cross-validation for each child run."""
    bootstrap_seed: int | None = None
    """Train on a bootstrap sample (same size, drawn with replacement, this seed) of the training split."""


class ModelConfig(BaseModel):
    """Which architecture and its knobs. Every key besides ``name`` and ``init`` is a model knob."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, str_min_length=1)

    name: str = "cnn"
    """Registered model name (``dlsuite list models``)."""
    init: str = "default"
    """Weight initialisation (``dlsuite list inits``), applied to every conv / linear layer."""
    init_std: float = Field(0.02, gt=0.0)
    """Standard deviation for ``init: normal`` (and the bound for ``uniform``)."""

    @property
    def knobs(self) -> dict[str, Any]:
        """The model's own knobs (width, depth, dropout, ...)."""
        return dict(self.model_extra or {})


class TaskConfig(Section):
    """What is learned and with which loss."""

    name: str = "classification"
    """Registered task (``dlsuite list tasks``)."""
    loss: str = "cross_entropy"
    """Registered loss (``dlsuite list losses``)."""
    recon_loss: Literal["mse", "l1", "bce"] = "mse"
    """``reconstruction`` task: loss between reconstruction and input (``bce`` needs ``data.normalize: unit``)."""
    kl_weight: float = Field(1.0, ge=0.0)
    """``reconstruction`` task with a variational autoencoder: weight of the KL term (beta-VAE)."""
    loss_args: dict[str, Any] = Field(default_factory=dict)
    """Options of the loss (``focal``: gamma; ``huber``: delta; ``hinge``: margin, p)."""


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped per epoch unless noted."""

    name: str = "constant"
    """Registered schedule (``dlsuite list schedulers``)."""
    warmup_epochs: int = Field(0, ge=0)
    """Linear warmup from ``lr * warmup_start`` to ``lr`` over this many epochs."""
    warmup_start: float = Field(0.1, gt=0.0, le=1.0)
    """Starting fraction of the learning rate for warmup."""
    step_size: int = Field(30, ge=1)
    """``step``: epochs between decays."""
    gamma: float = Field(0.1, gt=0.0)
    """``step`` / ``multistep`` / ``exponential`` / ``plateau``: decay factor."""
    milestones: list[int] = Field(default_factory=lambda: [30, 60, 90])
    """``multistep``: epochs at which to decay."""
    min_lr: float = Field(0.0, ge=0.0)
    """``cosine`` / ``cosine_restarts``: lowest learning rate."""
    restart_epochs: int = Field(10, ge=1)
    """``cosine_restarts``: length of the first cycle (T_0)."""
    restart_mult: int = Field(1, ge=1)
    """``cosine_restarts``: cycle length multiplier (T_mult)."""
    patience: int = Field(5, ge=0)
    """``plateau``: epochs without improvement of the validation loss before decaying."""


class OptimConfig(Section):
    """Optimiser, schedule and gradient clipping."""

    name: str = "adam"
    """Registered optimiser (``dlsuite list optimizers``)."""
    lr: float = Field(1e-3, gt=0.0)
    """Learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Weight decay of the optimiser (decoupled for ``adamw``); applied to weights only, see below."""
    decay_norm_and_bias: bool = False
    """Also decay biases and normalisation parameters (usually harmful, hence off)."""
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    """Momentum (``sgd``, ``rmsprop``)."""
    nesterov: bool = False
    """Nesterov momentum (``sgd``; needs ``momentum > 0``)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam-family moment decay rates."""
    eps: float = Field(1e-8, gt=0.0)
    """Adam-family / RMSprop denominator epsilon."""
    implementation: Literal["auto", "fused", "foreach", "for_loop"] = "auto"
    """How the update runs: ``fused`` (one kernel per parameter), ``foreach`` (batched over
    parameters) or ``for_loop``; ``auto`` takes the fastest the optimiser offers (fused for sgd,
    adam, adamw, adagrad; foreach for the rest). Results agree with ``for_loop`` to rounding."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments of the optimiser, passed through (``fused``/``foreach`` here win)."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""
    grad_clip: float | None = Field(None, gt=0.0)
    """Clip gradients at this value (``null``: no clipping)."""
    grad_clip_method: Literal["norm", "value"] = "norm"
    """Clip the global gradient ``norm`` or each gradient ``value``."""

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class EarlyStoppingConfig(Section):
    """Stop when the monitored validation metric stops improving (Lightning's EarlyStopping)."""

    monitor: str = "val_loss"
    """Metric to watch (``val_loss``, ``val_acc``, ...)."""
    patience: int = Field(10, ge=1)
    """Epochs without improvement before stopping."""
    mode: Literal["min", "max"] = "min"
    """Whether lower (``min``) or higher (``max``) is better."""
    min_delta: float = Field(0.0, ge=0.0)
    """Smallest change that counts as an improvement."""


class SWAConfig(Section):
    """Stochastic weight averaging: average the weights visited from ``epoch_start`` on."""

    lr: float | None = Field(None, gt=0.0)
    """SWA learning rate (``null``: keep the optimiser's)."""
    epoch_start: float = Field(0.8, gt=0.0)
    """First epoch averaged: an int, or a fraction of ``trainer.max_epochs`` when below 1."""
    annealing_epochs: int = Field(2, ge=0)
    """Epochs to anneal the learning rate to the SWA learning rate."""
    annealing_strategy: Literal["cos", "linear"] = "cos"
    """Shape of that annealing."""


class EMAConfig(Section):
    """Exponential moving average of the weights, updated every step."""

    decay: float = Field(0.999, gt=0.0, lt=1.0)
    """Weight of the old average at each update (higher = longer memory)."""
    start_step: int = Field(0, ge=0)
    """First optimiser step averaged."""


class EnsembleConfig(Section):
    """Several models whose softmax outputs are averaged on the test split."""

    method: Literal["bagging", "snapshot"] = "bagging"
    """``bagging``: ``members`` runs on bootstrap samples, each a child run; ``snapshot``: the weights at the
    end of the last ``members`` cycles of a ``cosine_restarts`` schedule, in one run."""
    members: int = Field(5, ge=2)
    """Number of ensemble members."""


class RegularizationConfig(Section):
    """Overfitting remedies applied through the loss, the data or callbacks."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Label smoothing of the cross-entropy loss."""
    early_stopping: EarlyStoppingConfig | None = None
    """Early stopping; ``null`` (default) trains for ``trainer.max_epochs``."""
    l1: float = Field(0.0, ge=0.0)
    """L1 penalty ``l1 * sum|w|`` on weights (>= 2-D tensors) added to the loss: drives weights to zero."""
    l2: float = Field(0.0, ge=0.0)
    """L2 penalty ``l2 * sum w^2`` on weights added to the loss (coupled, unlike ``optim.weight_decay``
    with ``adamw``); ``l1`` and ``l2`` together are the elastic net."""
    mixup_alpha: float = Field(0.0, ge=0.0)
    """Mixup: blend pairs of training examples and their targets with weight ~ Beta(alpha, alpha); 0 = off."""
    cutmix_alpha: float = Field(0.0, ge=0.0)
    """CutMix: paste a patch (an interval for sequences) from another example, targets weighted by area; 0 = off.
    With mixup on too, each batch uses one of the two at random."""
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)
    """Probability that a training batch is mixed (mixup / cutmix)."""
    swa: SWAConfig | None = None
    """Stochastic weight averaging (Lightning's StochasticWeightAveraging); the averaged weights are tested."""
    ema: EMAConfig | None = None
    """Exponential moving average of the weights (Lightning's EMAWeightAveraging), used for validation and test."""
    ensemble: EnsembleConfig | None = None
    """Ensembles: ``bagging`` (members on bootstrap samples) or ``snapshot`` (one per cosine-restart cycle)."""


class TrainerConfig(Section):
    """Settings passed to the Lightning Trainer."""

    max_epochs: int = Field(20, ge=1)
    """Epochs to train."""
    accelerator: str = "auto"
    """``cpu``, ``gpu``, ``cuda``, ``mps`` or ``auto``."""
    devices: int | str | list[int] = "auto"
    """Number of devices, a list of device ids, or ``auto``."""
    strategy: str = "auto"
    """``auto``, ``ddp``, ``ddp_spawn``, ``ddp_find_unused_parameters_true``, ``fsdp``..."""
    num_nodes: int = Field(1, ge=1)
    """Hosts taking part in multi-node DDP."""
    precision: Literal["32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true", "auto"] = "32-true"
    """Numeric precision; mixed precision needs a GPU (or CPU bf16). ``auto``: ``bf16-mixed`` on a GPU
    that supports bfloat16, ``32-true`` elsewhere."""
    deterministic: bool = False
    """Ask PyTorch for deterministic algorithms (CPU runs are deterministic with a seed anyway)."""
    progress_bar: bool = True
    """Show a progress bar."""
    check_val_every_n_epoch: int = Field(1, ge=1)
    """Validate every N epochs."""
    checkpoint_monitor: str = "val_acc"
    """Metric that picks the best checkpoint, which is then tested and logged."""
    checkpoint_mode: Literal["min", "max"] = "max"
    """Whether lower or higher ``checkpoint_monitor`` is better."""
    test_checkpoint: Literal["best", "last"] = "best"
    """Test the ``best`` validation checkpoint, or the ``last`` weights (the MNIST-1D paper's protocol)."""
    # -- fast paths (dlsuite/techniques/speed.py; measured by benchmarks/bench.py) --------------------
    compile: bool = False
    """``torch.compile`` the model (off by default: compiling costs tens of seconds on a CPU, more
    than a short run gains; the time is reported apart as ``compile_time_s``)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """``torch.compile`` mode; ``reduce-overhead`` replays CUDA graphs, the win for small models on a GPU."""
    channels_last: bool = False
    """Keep 4-D conv weights and image batches in channels-last layout (GPU tensor cores). Off by
    default: on an H100 a ResNet-18 on 32x32 inputs was slower with it (see benchmarks/README.md)."""
    cudnn_benchmark: bool = True
    """Let cuDNN time its convolution algorithms for the shapes seen (fixed shapes: safe and faster)."""
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    """CPU threads torch uses (``torch.set_num_threads``). ``auto``: the cores this process may use that
    the machine's load leaves free (1-minute load average), at least 1; a second thread that competes for
    a busy core slowed a run 5x (benchmarks/README.md). Study workers split the cores among themselves."""
    matmul_precision: Literal["highest", "high", "medium"] = "high"
    """``torch.set_float32_matmul_precision``: ``high`` allows TF32 matmuls on Ampere+ GPUs."""

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str | list[int]) -> int | str | list[int]:
        if isinstance(v, str) and v != "auto" and not v.lstrip("-").isdigit():
            raise ValueError("devices must be an int, a list of ids, or 'auto'")
        if isinstance(v, int) and v == 0:
            raise ValueError("devices must not be 0")
        return v


class DiagnosticsConfig(Section):
    """Cheap per-epoch diagnostics: per-layer gradient norms, dead ReLUs, saturation, weight norms, sparsity."""

    enabled: bool = True
    """Compute and log the diagnostics."""
    every_n_steps: int = Field(25, ge=1)
    """Sample gradients and activations every N training steps (and on each epoch's first step)."""
    sparsity_threshold: float = Field(1e-3, ge=0.0)
    """A weight counts as zero (sparsity) when its magnitude is below this."""
    plots: bool = True
    """Draw the four summary PNGs at the end of the run (the numbers are logged every epoch either
    way). Study trials default to off: the PNGs cost about 0.9 s a run on the 2-core CPU."""


class TrackingConfig(Section):
    """Where and how the run is recorded in MLflow."""

    enabled: bool = True
    """Record the run in MLflow."""
    uri: str | None = None
    """Tracking URI; default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns/mlflow.db``."""
    experiment: str = Field("dlsuite", min_length=1)
    """MLflow experiment name."""
    run_name: str | None = None
    """Run name; default ``<model>-<dataset>``."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags on the run."""
    log_checkpoint: bool = True
    """Log the best checkpoint as an artifact."""
    log_model: bool = True
    """Log the tested weights (the best checkpoint when there is validation) as an MLflow logged model,
    linked to the run's final metrics and loadable with ``mlflow.pytorch.load_model("models:/<id>")``.
    Study trials default to off (it adds a pickle, an upload and store writes to every trial)."""
    plots: bool = True
    """Log the learning-curve and confusion-matrix PNGs."""
    diagnostics: DiagnosticsConfig = Field(default_factory=lambda: DiagnosticsConfig())
    """Gradient-flow, activation and weight diagnostics logged per epoch, with PNG summaries."""


class RunConfig(Section):
    """Everything that defines one training run."""

    name: str | None = None
    """Name of the config (defaults to the YAML file's stem)."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed for weights, shuffling and augmentation (the data split has its own, ``data.split_seed``)."""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (JSON/YAML-safe), model knobs included."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML; ``load_config`` on it gives the same config back."""
        return yamlio.dumps(self.to_dict())

    def flat(self) -> dict[str, Any]:
        """Dotted keys to leaf values, as logged to MLflow params."""
        return flatten(self.to_dict())


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating dicts on the way."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {key!r}: {p!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as YAML) to a copy of ``data``."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_dotted(out, key.strip(), yamlio.parse_value(raw))
    return out


def _format_error(exc: ValidationError, source: str) -> str:
    """One readable line per pydantic error, with did-you-mean for unknown keys."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent: type[BaseModel] = RunConfig
            for p in err["loc"][:-1]:
                ann = parent.model_fields[str(p)].annotation
                sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
                parent = next((a for a in sub if issubclass(a, BaseModel)), parent)
            valid = list(parent.model_fields)
            hint = did_you_mean(str(err["loc"][-1]), valid)
            lines.append(f"unknown key {loc!r}{hint}; valid keys here: {', '.join(valid)}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{loc}: {err['msg']}{shown}")
    return f"invalid config {source}: " + "; ".join(lines)


def build_config(data: Any, source: str = "") -> RunConfig:
    """Validate plain data into a :class:`RunConfig`, raising :class:`ConfigError` on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping of sections")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when ``path`` is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        loaded = yamlio.load(path)
        if loaded is None:
            # an empty file would silently train the defaults: say so instead
            raise ConfigError(f"config file {path} is empty; it needs at least one section (see configs/)")
        if not isinstance(loaded, dict):
            raise ConfigError(f"invalid config {path}: the top level must be a mapping of sections")
        data = loaded
        source = str(path)
        data.setdefault("name", Path(path).stem)
    data = apply_overrides(data, overrides or [])
    return build_config(data, source)
