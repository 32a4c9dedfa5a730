"""``dlsuite doctor RUN_ID``: does a finished run over- or underfit, why, and which remedies to compare.

The diagnosis reads only what every run records (per-epoch train/validation loss and accuracy, the
run's config) plus, when present, the gradient diagnostics (``grad_norm/<layer>``, ``grad_norm_ratio``,
``dead_relu_mean``, ``saturation_mean``). It names the evidence with numbers, then writes a compare
study (baseline = the run's own config, one variant per remedy) that tests the remedies over seeds
instead of trusting a rule of thumb.

Signals, and the thresholds used (deliberately simple, stated in the output):

- overfitting: final train-validation accuracy gap >= 0.10 (mean of the last 3 epochs, to smooth
  noise); validation loss ending >= 20 % above its minimum, reached well before the last epoch.
- underfitting: final training accuracy < 0.90 with a small gap (the model does not even fit the data it
  sees); training loss still falling at the end with the best validation epoch the last one (too short).
- gradients: first/last layer gradient-norm ratio < 1e-2 (vanishing) or a layer's norm > 1e3 or growing
  100x (exploding); more than half the ReLU units dead, or sigmoid/tanh units saturated.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsuite import yamlio
from dlsuite.config import RunConfig, build_config
from dlsuite.errors import ConfigError, DlsuiteError

GAP_OVERFIT = 0.10
GAP_SMALL = 0.05
VAL_LOSS_RISE = 0.20
TRAIN_ACC_UNDERFIT = 0.90
STILL_IMPROVING = 0.05
VANISHING_RATIO = 1e-2
EXPLODING_NORM = 1e3
DEAD_OR_SATURATED = 0.5
#: Model knobs that scale capacity, first match wins (docs/models.md: ``width`` in every family but
#: DenseNet, whose size is its ``growth_rate``); a test checks them against the registry.
CAPACITY_KNOBS = ("width", "growth_rate")
EPOCH_KEYS = ("train_acc", "val_acc", "train_loss", "val_loss")


@dataclass
class Diagnosis:
    """What the doctor found, and the remedies it proposes as compare-study variants."""

    run_id: str | None
    verdict: str
    """``overfitting``, ``underfitting`` or ``good fit``."""
    evidence: list[str]
    """Numbered reasons, one line each."""
    numbers: dict[str, float]
    config: RunConfig
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Remedy name -> overrides; empty when nothing needs a remedy."""
    why: dict[str, str] = field(default_factory=dict)
    """Remedy name -> one-line reason."""
    run_seconds: float | None = None
    """Wall time of the diagnosed run (start to end), to estimate what the remedy study costs."""


# -- signals ---------------------------------------------------------------------------------------
def _last(xs: list[float], k: int = 3) -> float:
    tail = [x for x in xs[-k:] if math.isfinite(x)]
    return sum(tail) / len(tail) if tail else math.nan


def _series(history: list[dict[str, float]], key: str) -> list[float]:
    return [float(r.get(key, math.nan)) for r in history]


def fit_signals(history: list[dict[str, float]]) -> dict[str, float]:
    """Numbers the verdict rests on, from the per-epoch history (``train_acc``, ``val_acc``, losses)."""
    train_acc, val_acc = _series(history, "train_acc"), _series(history, "val_acc")
    train_loss, val_loss = _series(history, "train_loss"), _series(history, "val_loss")
    n = len(history)
    out: dict[str, float] = {"epochs": float(n)}
    out["final_train_acc"] = _last(train_acc)
    out["final_val_acc"] = _last(val_acc)
    out["final_gap_acc"] = out["final_train_acc"] - out["final_val_acc"]
    finite_vl = [(v, i) for i, v in enumerate(val_loss) if math.isfinite(v)]
    if finite_vl:
        vmin, imin = min(finite_vl)
        out["min_val_loss"], out["min_val_loss_epoch"] = vmin, float(imin)
        out["val_loss_rise"] = _last(val_loss, 2) / vmin - 1.0 if vmin > 0 else math.nan
    finite_va = [(v, -i) for i, v in enumerate(val_acc) if math.isfinite(v)]
    if finite_va:
        out["best_val_acc"], neg = max(finite_va)
        out["best_epoch"] = float(-neg)
    if n >= 4:
        # relative fall of the training loss over the last quarter of training
        k = max(1, n // 4)
        before, now = train_loss[-k - 1], train_loss[-1]
        out["train_loss_recent_drop"] = (before - now) / before if before > 0 else math.nan
    return out


def gradient_signals(grads: dict[str, list[float]], extra: dict[str, float]) -> dict[str, float]:
    """Summary of gradient diagnostics: ``grads`` maps ``grad_norm/<layer>`` to per-epoch values,
    ``extra`` holds final ``grad_norm_ratio`` / ``dead_relu_mean`` / ``saturation_mean`` when logged."""
    out: dict[str, float] = {}
    finals = {k: v[-1] for k, v in grads.items() if v and math.isfinite(v[-1])}
    if finals:
        out["grad_norm_max"] = max(finals.values())
        out["grad_norm_min"] = min(finals.values())
        growth = [v[-1] / v[0] for v in grads.values() if len(v) > 1 and v[0] > 0 and math.isfinite(v[-1])]
        if growth:
            out["grad_norm_growth"] = max(growth)
        if "grad_norm_ratio" in extra:
            out["grad_norm_ratio"] = extra["grad_norm_ratio"]
        elif out["grad_norm_max"] > 0:
            out["grad_norm_ratio"] = out["grad_norm_min"] / out["grad_norm_max"]
    for k in ("dead_relu_mean", "saturation_mean"):
        if k in extra:
            out[k] = extra[k]
    return out


# -- the diagnosis -------------------------------------------------------------------------------------
def diagnose(
    history: list[dict[str, float]],
    cfg: RunConfig,
    grads: dict[str, list[float]] | None = None,
    extra: dict[str, float] | None = None,
    run_id: str | None = None,
    available_train: int | None = None,
) -> Diagnosis:
    """Verdict, evidence and remedies for one run's per-epoch history and config.

    Args:
        history: per-epoch records with ``train_acc``, ``val_acc``, ``train_loss``, ``val_loss``.
        cfg: the run's config (remedies are overrides of it).
        grads: ``grad_norm/<layer>`` -> per-epoch values, when the run logged gradient diagnostics.
        extra: final values of ``grad_norm_ratio``, ``dead_relu_mean``, ``saturation_mean`` if logged.
        run_id: the diagnosed run, for the report.
        available_train: training examples available without ``data.train_samples`` (for "more data").
    """
    if not history or all(math.isnan(r.get("val_acc", math.nan)) for r in history):
        raise DlsuiteError("the run has no per-epoch validation metrics (val_acc): nothing to diagnose")
    s = fit_signals(history)
    g = gradient_signals(grads or {}, extra or {})
    s.update(g)
    over: list[str] = []
    under: list[str] = []
    notes: list[str] = []
    gap, train_acc, n = s["final_gap_acc"], s["final_train_acc"], int(s["epochs"])
    if gap >= GAP_OVERFIT:
        over.append(
            f"train accuracy {train_acc:.3f} vs validation {s['final_val_acc']:.3f}: a gap of {gap:.3f} "
            f"(>= {GAP_OVERFIT}) over the last epochs"
        )
    rise, imin = s.get("val_loss_rise", math.nan), int(s.get("min_val_loss_epoch", n - 1))
    if math.isfinite(rise) and rise >= VAL_LOSS_RISE and imin < n - 2:
        over.append(
            f"validation loss turned up: lowest {s['min_val_loss']:.3f} at epoch {imin}, ends {rise:.0%} higher "
            f"(>= {VAL_LOSS_RISE:.0%})"
        )
    best = int(s.get("best_epoch", n - 1))
    if over and best < n - 1:
        notes.append(
            f"best validation accuracy {s['best_val_acc']:.3f} at epoch {best} (counted from 0) of {n} trained"
        )
    if train_acc < TRAIN_ACC_UNDERFIT and gap < GAP_OVERFIT:
        under.append(
            f"train accuracy only {train_acc:.3f} (< {TRAIN_ACC_UNDERFIT}) with a gap of {gap:.3f}: "
            "the model does not fit the data it trains on"
        )
    drop = s.get("train_loss_recent_drop", math.nan)
    if math.isfinite(drop) and drop >= STILL_IMPROVING and best >= n - 1:
        under.append(
            f"still learning when stopped: training loss fell {drop:.0%} over the last quarter of training and "
            "validation accuracy peaked in the last epoch"
        )
    elif n < 4 and best >= n - 1 and gap < GAP_OVERFIT:
        under.append(f"only {n} epoch(s), validation accuracy still rising at the end")
    grad_notes = _gradient_evidence(s)
    verdict = "overfitting" if over else "underfitting" if under else "good fit"
    if verdict == "good fit" and not grad_notes:
        notes.append(f"gap {gap:.3f} < {GAP_OVERFIT}, train accuracy {train_acc:.3f}, no rising validation loss")
    if verdict == "overfitting" and gap < GAP_SMALL:
        notes.append("the gap in accuracy is small: the overfitting shows in the loss (over-confident predictions)")
    diag = Diagnosis(run_id, verdict, [*over, *under, *grad_notes, *notes], s, cfg)
    _propose(diag, grad_notes, available_train)
    return diag


def _gradient_evidence(s: dict[str, float]) -> list[str]:
    out = []
    ratio = s.get("grad_norm_ratio", math.nan)
    if math.isfinite(ratio) and ratio < VANISHING_RATIO:
        out.append(f"vanishing gradients: first/last layer gradient-norm ratio {ratio:.2g} (< {VANISHING_RATIO})")
    if s.get("grad_norm_max", 0.0) > EXPLODING_NORM or s.get("grad_norm_growth", 0.0) > 100:
        out.append(
            f"exploding gradients: largest layer gradient norm {s.get('grad_norm_max', math.nan):.3g}, "
            f"grew {s.get('grad_norm_growth', math.nan):.3g}x over training"
        )
    if s.get("dead_relu_mean", 0.0) > DEAD_OR_SATURATED:
        out.append(f"dead ReLUs: {s['dead_relu_mean']:.0%} of units output zero on whole batches")
    if s.get("saturation_mean", 0.0) > DEAD_OR_SATURATED:
        out.append(f"saturated units: {s['saturation_mean']:.0%} of sigmoid/tanh outputs at their flat ends")
    return out


# -- remedies -------------------------------------------------------------------------------------------
def _knobs(cfg: RunConfig) -> dict[str, Any]:
    from dlsuite.models.api import model_knobs

    return {**model_knobs(cfg.model.name), **{k: v for k, v in cfg.model.knobs.items() if v is not None}}


def _capacity(cfg: RunConfig) -> tuple[str, int] | None:
    knobs = _knobs(cfg)
    if knobs.get("depth") == 0:  # an MLP without hidden layers (``linear``): its width does nothing
        return None
    for k in CAPACITY_KNOBS:
        if isinstance(knobs.get(k), int) and not isinstance(knobs.get(k), bool):
            return k, int(knobs[k])
    return None


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _propose(d: Diagnosis, grad_notes: list[str], available_train: int | None) -> None:
    cfg, add = d.config, d.variants
    knobs = _knobs(cfg)

    def put(name: str, overrides: list[str], why: str) -> None:
        add[name] = overrides
        d.why[name] = why

    if d.verdict == "overfitting":
        dropout = knobs.get("dropout")
        if isinstance(dropout, (int, float)) and dropout < 0.6:
            rate = 0.3 if dropout < 0.3 else round(min(0.6, dropout + 0.2), 2)
            put("dropout", [f"model.dropout={rate}"], f"dropout {dropout} -> {rate}: random units off while training")
        if cfg.optim.name in ("sgd", "rmsprop") or cfg.optim.weight_decay > 0:
            wd = max(5e-4, cfg.optim.weight_decay * 10)
            put("weight_decay", [f"optim.weight_decay={_fmt(wd)}"], "weight decay (L2 on the weights) x10 or 5e-4")
        else:
            # 1e-2 is PyTorch's own AdamW default; 1e-3 decoupled decay at lr 1e-3 barely moves the weights
            put(
                "weight_decay",
                ["optim.name=adamw", "optim.weight_decay=0.01"],
                f"decoupled weight decay: {cfg.optim.name} -> adamw with weight_decay 0.01",
            )
        if cfg.task.loss == "cross_entropy" and cfg.regularization.label_smoothing < 0.1:
            put("label_smoothing", ["regularization.label_smoothing=0.1"], "label smoothing 0.1: less over-confidence")
        if cfg.regularization.l2 == 0 and cfg.regularization.l1 == 0:
            put("l2_penalty", ["regularization.l2=0.01"], "L2 penalty 1e-2 added to the loss (separate from decay)")
        if cfg.task.loss == "cross_entropy" and cfg.regularization.mixup_alpha == 0:
            put("mixup", ["regularization.mixup_alpha=0.2"], "mixup 0.2: train on blends of example pairs")
        if cfg.regularization.early_stopping is None:
            patience = max(3, min(10, d.numbers["epochs"] // 5))
            put(
                "early_stopping",
                [f"regularization.early_stopping={{monitor: val_loss, patience: {int(patience)}}}"],
                f"stop when validation loss has not improved for {int(patience)} epochs",
            )
        cap = _capacity(cfg)
        if cap and cap[1] >= 2:
            put(
                "smaller_model",
                [f"model.{cap[0]}={cap[1] // 2}"],
                f"half the capacity: {cap[0]} {cap[1]} -> {cap[1] // 2}",
            )
        cap_n = cfg.data.train_samples
        if cap_n is not None and (available_train is None or cap_n < available_train):
            more = 2 * cap_n if available_train is None else min(2 * cap_n, available_train)
            put("more_data", [f"data.train_samples={more}"], f"twice the training data: {cap_n} -> {more} examples")
    elif d.verdict == "underfitting":
        cap = _capacity(cfg)
        if cfg.model.name == "linear":
            put("bigger_model", ["model.name=mlp"], "a linear model cannot fit this data: an MLP (2 hidden layers)")
        elif cap:
            put(
                "bigger_model",
                [f"model.{cap[0]}={cap[1] * 2}"],
                f"twice the capacity: {cap[0]} {cap[1]} -> {cap[1] * 2}",
            )
        epochs = cfg.trainer.max_epochs
        put("longer_training", [f"trainer.max_epochs={epochs * 2}"], f"twice the epochs: {epochs} -> {epochs * 2}")
        lr = cfg.optim.lr
        higher = lr * (10 if lr <= 1e-4 else 3)
        put("higher_lr", [f"optim.lr={_fmt(higher)}"], f"learning rate {_fmt(lr)} -> {_fmt(higher)}")
        less: list[str] = []
        if isinstance(knobs.get("dropout"), (int, float)) and knobs["dropout"] > 0:
            less.append("model.dropout=0.0")
        if cfg.optim.weight_decay > 0:
            less.append("optim.weight_decay=0.0")
        if cfg.regularization.label_smoothing > 0:
            less.append("regularization.label_smoothing=0.0")
        if cfg.regularization.early_stopping is not None:
            less.append("regularization.early_stopping=null")
        if less:
            put("less_regularization", less, "switch off the regularisers this run uses")
    _gradient_remedies(d, grad_notes, knobs, put)


def _gradient_remedies(d: Diagnosis, grad_notes: list[str], knobs: dict[str, Any], put: Any) -> None:
    text = " ".join(grad_notes)
    cfg = d.config
    if "vanishing" in text or "saturated" in text:
        if knobs.get("activation") in ("sigmoid", "tanh", "softplus"):
            put("relu", ["model.activation=relu"], f"{knobs['activation']} saturates: ReLU keeps gradients flowing")
        if knobs.get("norm") == "none":
            put("batch_norm", ["model.norm=batch"], "batch norm rescales every layer's inputs")
        if cfg.model.init not in ("kaiming_normal", "kaiming_uniform"):
            put("kaiming_init", ["model.init=kaiming_normal"], "He initialisation keeps activations' scale per layer")
    if "exploding" in text:
        put("grad_clip", ["optim.grad_clip=1.0"], "clip the global gradient norm at 1")
        put("lower_lr", [f"optim.lr={_fmt(cfg.optim.lr / 3)}"], "a third of the learning rate")
    if "dead ReLUs" in text and knobs.get("activation") == "relu":
        put("leaky_relu", ["model.activation=leaky_relu"], "leaky ReLU units cannot die")


# -- reading a run -------------------------------------------------------------------------------------
def _available_train(cfg: RunConfig) -> int | None:
    """Training examples without the ``train_samples`` cap (None when the data cannot be read here)."""
    if cfg.data.train_samples is None:
        return None
    from dlsuite.data import create_datamodule

    try:
        dm = create_datamodule(cfg.data.model_copy(update={"train_samples": None}), cfg.seed)
        dm.prepare()
        return len(dm.splits["train"][1])
    except DlsuiteError:
        return None


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def diagnose_run(run_id: str, uri: str | None = None) -> Diagnosis:
    """Read a finished run from MLflow (config, per-epoch metrics, gradient diagnostics) and diagnose it."""
    from mlflow.exceptions import MlflowException

    from dlsuite.tracking import store

    client = store.client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise DlsuiteError(f"no run {run_id!r} in {client.tracking_uri}") from None
    if run.info.status != "FINISHED":
        raise DlsuiteError(f"run {run_id} is {run.info.status}; the doctor reads finished runs")
    with tempfile.TemporaryDirectory(prefix="dlsuite-doctor-") as tmp:
        try:
            # no progress bar for one small file
            with _env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"):
                path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise DlsuiteError(f"run {run_id} has no config.yaml artifact: not a dlsuite run") from None
        data = yamlio.load(path)
    cfg = build_config(data, f"(config of run {run_id})")
    by_epoch: dict[int, dict[str, float]] = {}
    for key in EPOCH_KEYS:
        for m in client.get_metric_history(run_id, key):
            by_epoch.setdefault(int(m.step), {"epoch": float(m.step)})[key] = float(m.value)
    history = [by_epoch[e] for e in sorted(by_epoch)]
    metrics = run.data.metrics
    grads = {
        k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
        for k in metrics
        if k.startswith("grad_norm/")
    }
    extra: dict[str, float] = {
        k: metrics[k] for k in ("grad_norm_ratio", "dead_relu_mean", "saturation_mean") if k in metrics
    }
    d = diagnose(history, cfg, grads, extra, run_id=run_id, available_train=_available_train(cfg))
    if run.info.end_time and run.info.start_time:
        d.run_seconds = (run.info.end_time - run.info.start_time) / 1000
    return d


# -- output ------------------------------------------------------------------------------------------------
def format_diagnosis(d: Diagnosis) -> str:
    """The verdict, the evidence and the proposed remedies as text."""
    lines = [f"run {d.run_id or '(in memory)'}: {d.verdict.upper()}"]
    lines += [f"  - {e}" for e in d.evidence]
    if d.variants:
        lines.append("remedies to compare against the run as it is (baseline):")
        lines += [f"  {name:18s} {' '.join(sets):60s} {d.why[name]}" for name, sets in d.variants.items()]
    return "\n".join(lines) + "\n"


def remedy_study(d: Diagnosis, seeds: int = 5) -> dict[str, Any]:
    """A compare study (plain data): the run's config as base, ``baseline`` plus one variant per remedy."""
    if seeds < 1:
        raise ConfigError("seeds must be >= 1")
    base = d.config.to_dict()
    base.pop("name", None)
    base["tracking"]["run_name"] = None
    base["seed"] = 0
    name = f"doctor_{(d.run_id or 'run')[:8]}"
    return {
        "name": name,
        "type": "compare",
        "base": base,
        "overrides": [],
        "variants": {"baseline": [], **d.variants},
        "seeds": list(range(seeds)),
        "metric": "test_acc",
        "direction": "maximize",
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def remedy_cost(d: Diagnosis, seeds: int) -> str:
    """What running the remedy study costs: its runs, and their time at the diagnosed run's duration."""
    runs = (len(d.variants) + 1) * seeds  # the baseline is a variant too
    text = f"{runs} runs ({len(d.variants) + 1} variants x {seeds} seeds)"
    if d.run_seconds:
        text += (
            f", about {_duration(runs * d.run_seconds)} at the diagnosed run's {_duration(d.run_seconds)} each "
            "with one worker (--workers N shares them out; fewer seeds: --seeds)"
        )
    return text


def default_study_path(name: str) -> Path:
    """``mlruns/reports/NAME/NAME.yaml``: beside the report that ``dlsuite study run`` writes for it."""
    return Path("mlruns") / "reports" / name / f"{name}.yaml"


def write_remedy_study(d: Diagnosis, path: str | Path | None = None, seeds: int = 5) -> Path:
    """Write :func:`remedy_study` as YAML (default :func:`default_study_path`), with the diagnosis, each
    remedy's reason and the study's cost as comments; every variant's config is validated first."""
    from dlsuite.hpo.spec import build_study_spec, validate

    study = remedy_study(d, seeds)
    # through the one study schema: a remedy it refuses is a bug here, not the user's problem
    validate(build_study_spec(study, f"(doctor study {study['name']})"))
    out = Path(path) if path else default_study_path(study["name"])
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    head = [f"# written by `dlsuite doctor {d.run_id}` on {today}: {d.verdict}"]
    head += [f"#   - {e}" for e in d.evidence]
    head += ["# remedies (each a variant; 'baseline' is the diagnosed run's own config):"]
    head += [f"#   {k}: {w}" for k, w in d.why.items()]
    head += [f"# cost: {remedy_cost(d, seeds)}"]
    head += [f"# run: dlsuite study run {out}   then: dlsuite compare report {study['name']}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head) + "\n" + yamlio.dumps(study))
    return out
