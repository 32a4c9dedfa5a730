"""dlsuite against the loops a user would write by hand: steps per second, in one process.

Each recipe (``benchmarks/recipes.py``) is trained three ways on the same data, model, optimiser
and batch size:

- ``dlsuite``: ``dlsuite.runner.run.train(cfg)``, the real thing: MLflow tracking into a temporary
  store, checkpointing, device-resident data, device-side metrics (progress bar off);
- ``hand``: a hand-written PyTorch loop over device-resident tensors (``randperm`` + indexing,
  forward, ``cross_entropy``, ``zero_grad``, ``backward``, ``step``), nothing else;
- ``lightning``: a minimal LightningModule with a ``DataLoader(TensorDataset)``, no logger,
  no checkpointing, no progress bar: plain Lightning as its tutorials write it.

Modes are interleaved within each repeat (the order rotates), so slow phases of a shared machine
hit every mode alike. The first epoch of every run is warm-up (and compilation) and is not timed.
Reported: machine, versions, repeats, median steps/s with [min-max], and ratios of dlsuite to the
others taken per repeat (paired) then the median. Also MLflow logging time as a fraction of
epoch time (from dlsuite's runs), and optionally trials per hour of a study (``--study``).

Usage: ``python -m benchmarks.bench [--recipes mnist1d_cnn,resnet32,lstm_mnist1d] [--repeats 3]``
``[--device auto|cpu|cuda] [--compile] [--precision bf16-mixed] [--study studies/quick.yaml]``
``[--tiny] [--json out.json]``. The harness reports; it never fails on speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.recipes import RECIPES, Recipe
from dlsuite.config import RunConfig, load_config
from dlsuite.data import create_datamodule
from dlsuite.models import apply_init, create_model
from dlsuite.techniques.speed import EpochTimer, cheap_cuda_check, prepare_model, resolve_precision

MODES = ("dlsuite", "hand", "lightning")
ROOT = Path(__file__).resolve().parent.parent


# -- the facts every result states ----------------------------------------------------------
def machine() -> dict[str, Any]:
    """Hardware and software the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import lightning
    import mlflow

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "mlflow": mlflow.__version__,
    }
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    return info


# -- the three loops ---------------------------------------------------------------------------
def recipe_config(recipe: Recipe, device: str, tiny: bool, extra: Sequence[str] = ()) -> RunConfig:
    """The recipe as a dlsuite run config on ``device`` (``cpu`` or ``cuda``)."""
    epochs = 2 if tiny else recipe.epochs
    return load_config(
        None,
        [
            *recipe.overrides,
            *(recipe.tiny if tiny else []),
            f"trainer.max_epochs={epochs}",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
            "trainer.devices=1",
            "trainer.progress_bar=false",
            "tracking.experiment=benchmark",
            "tracking.plots=false",
            "tracking.log_checkpoint=false",
            *extra,
        ],
    )


def _build(cfg: RunConfig, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The recipe's model (seeded exactly as dlsuite seeds it) and training tensors on the CPU."""
    L.seed_everything(cfg.seed, verbose=False)
    dm = create_datamodule(cfg.data, cfg.seed)
    dm.prepare()
    x, y = dm.splits["train"]
    model = create_model(cfg.model.name, dm.input_shape, dm.num_classes, **cfg.model.knobs)
    apply_init(model, cfg.model.init, cfg.model.init_std)
    prepare_model(model, cfg.trainer)  # the same channels_last / compile switches as dlsuite
    return model.to(device), x, y


def _optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    # What a user writes: one parameter group, the recipe's optimiser and settings.
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps)
    raise ValueError(f"the hand-written loop knows sgd and adam, not {o.name!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if resolve_precision(cfg.trainer) == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_hand(cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """The hand-written loop over device-resident tensors; steps/s after the first epoch."""
    model, x, y = _build(cfg, device)
    x, y = x.to(device), y.to(device)
    opt = _optimizer(model, cfg)
    bs, n = cfg.data.batch_size, len(x)
    marks: list[float] = []
    steps = 0
    model.train()
    graphs = cfg.trainer.compile and cfg.trainer.compile_mode == "reduce-overhead" and device.type == "cuda"
    for _ in range(cfg.trainer.max_epochs):
        _sync(device)
        marks.append(time.perf_counter())
        if len(marks) == 2:
            steps = 0  # count from the end of the warm-up epoch
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with _autocast(cfg, device):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    _sync(device)
    marks.append(time.perf_counter())
    out = {"steps_per_s": steps / (marks[-1] - marks[1])}
    if cfg.trainer.compile:
        out["compile_time_s"] = max(0.0, (marks[1] - marks[0]) - statistics.median(_diffs(marks)[1:]))
    return out


def _diffs(marks: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(marks)]


class _PlainModule(L.LightningModule):
    """The minimal LightningModule of Lightning's tutorials."""

    def __init__(self, model: nn.Module, cfg: RunConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.model, self.cfg)


def run_lightning(cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """Plain Lightning: ``DataLoader(TensorDataset)`` on the host, Trainer without extras."""
    model, x, y = _build(cfg, torch.device("cpu"))
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=resolve_precision(cfg.trainer),  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.data.batch_size, shuffle=True)
    trainer.fit(_PlainModule(model, cfg), train_dataloaders=loader)
    return timer.summary(compiled=cfg.trainer.compile)


def run_dlsuite(cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """``dlsuite.runner.run.train``: tracked in MLflow, checkpointed, as a user runs it."""
    from dlsuite.runner.run import train

    result = train(cfg)
    keys = ("steps_per_s", "compile_time_s", "mlflow_log_fraction", "epoch_time_s")
    return {k: result.metrics[k] for k in keys if k in result.metrics}


RUNNERS = {"dlsuite": run_dlsuite, "hand": run_hand, "lightning": run_lightning}


# -- repeats and the report -----------------------------------------------------------------------
def bench_recipe(
    recipe: Recipe, modes: Sequence[str], repeats: int, device: str, tiny: bool, extra: Sequence[str]
) -> dict[str, Any]:
    """Run every mode ``repeats`` times, interleaved; the raw figures per mode."""
    cfg = recipe_config(recipe, device, tiny, extra)
    dev = torch.device(device)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(repeats):
        order = list(modes[r % len(modes) :]) + list(modes[: r % len(modes)])
        for mode in order:
            runs[mode].append(RUNNERS[mode](cfg, dev))
            rate = _num(runs[mode][-1]["steps_per_s"])
            print(f"  {recipe.name} repeat {r + 1}/{repeats} {mode}: {rate} steps/s", flush=True)
    return {"recipe": recipe.name, "note": recipe.note, "config": cfg.to_dict(), "runs": runs}


def _num(x: float) -> str:
    """Three significant figures at most, never scientific notation (0.042, 3.17, 412)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _stats(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / med,
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Median and spread of steps/s per mode; paired ratios of dlsuite to the other modes."""
    runs = result["runs"]
    out: dict[str, Any] = {m: _stats([r["steps_per_s"] for r in rs]) for m, rs in runs.items()}
    if "dlsuite" in runs:
        for other in ("hand", "lightning"):
            if other in runs:
                ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(runs["dlsuite"], runs[other])]
                out[f"dlsuite/{other}"] = _stats(ratios)
        extras = {k: [r[k] for r in runs["dlsuite"] if k in r] for k in ("mlflow_log_fraction", "compile_time_s")}
        out.update({k: _stats(v) for k, v in extras.items() if v})
    return out


def format_report(info: dict[str, Any], results: list[dict[str, Any]], repeats: int, device: str) -> str:
    """The printed table: one row per recipe, then the machine."""
    lines = [
        f"dlsuite benchmark, {info['date_utc']} UTC, device {device}"
        + (f" ({info['gpu']})" if device == "cuda" and info.get("gpu") else ""),
        f"machine: {info['cpu']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']}"
        + (f", load average {info['load_average'][0]:.1f}" if "load_average" in info else ""),
        f"versions: python {info['python']}, torch {info['torch']}, lightning {info['lightning']}, "
        f"mlflow {info['mlflow']}" + (f", dlsuite {info['commit']}" if info.get("commit") else ""),
        f"repeats: {repeats}; steps/s as median [min-max]; ratios = dlsuite steps/s / other's, paired per repeat",
        "",
        f"{'recipe':14s} {'dlsuite':>20s} {'hand-written':>20s} {'lightning+DataLoader':>22s} "
        f"{'dlsuite/hand':>13s} {'dlsuite/lightning':>18s} {'MLflow log':>11s}",
    ]

    def cell(s: dict[str, float] | None, width: int) -> str:
        if s is None:
            return f"{'-':>{width}s}"
        text = f"{_num(s['median'])} [{_num(s['min'])}-{_num(s['max'])}]"
        return f"{text:>{width}s}"

    for res in results:
        s = res["summary"]
        log = s.get("mlflow_log_fraction")
        vs_hand = f"{s['dlsuite/hand']['median']:.2f}x" if "dlsuite/hand" in s else "-"
        vs_light = f"{s['dlsuite/lightning']['median']:.2f}x" if "dlsuite/lightning" in s else "-"
        logged = f"{100 * log['median']:.2f}%" if log else "-"
        lines.append(
            f"{res['recipe']:14s} {cell(s.get('dlsuite'), 20)} {cell(s.get('hand'), 20)} "
            f"{cell(s.get('lightning'), 22)} {vs_hand:>13s} {vs_light:>18s} {logged:>11s}"
        )
        if "compile_time_s" in s:
            lines.append(f"{'':14s} compile time (first epoch's excess): {s['compile_time_s']['median']:.1f} s")
    lines.append("")
    for res in results:
        lines.append(f"{res['recipe']}: {res['note']}")
    return "\n".join(lines)


# -- the study benchmark ------------------------------------------------------------------------
def study_available() -> bool:
    """Whether this checkout has the ``dlsuite study`` command."""
    from dlsuite.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "study" in sub.choices


def bench_study(spec: str, overrides: Sequence[str] = (), workers: int = 1) -> dict[str, Any] | None:
    """Trials per hour of ``dlsuite study run SPEC`` in a fresh store; None (with a message) when
    this checkout has no ``study`` command."""
    if not study_available():
        print("study benchmark skipped: this checkout has no `dlsuite study` command")
        return None
    path = (Path(spec) if Path(spec).is_absolute() else ROOT / spec).resolve()
    with tempfile.TemporaryDirectory(prefix="dlsuite-bench-study-") as tmp:
        # this checkout first, then whatever the caller had on the path (packages carried to a GPU machine)
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlruns/mlflow.db", "PYTHONPATH": pythonpath}
        cmd = [sys.executable, "-m", "dlsuite", "study", "run", str(path), "--workers", str(workers)]
        if overrides:
            cmd += ["--set", *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"study benchmark failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
            return None
        from mlflow import MlflowClient

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(exps, max_results=10_000)
        trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        out = {
            "spec": str(path),
            "workers": workers,
            "trials": len(trials),
            "wall_s": wall,
            "trials_per_hour": 3600 * len(trials) / wall,
        }
        out.update(trial_overhead(Path(tmp)))
    return out


def trial_overhead(workdir: Path) -> dict[str, float]:
    """Fixed cost per trial: the Optuna trial's wall time minus its training loop's (the run's
    ``train_time_s``: every epoch, validation included), i.e. data, model, MLflow run, test pass,
    plots and artifacts; medians."""
    import optuna
    from mlflow import MlflowClient

    from dlsuite.hpo.runner import RUN_ID_ATTR
    from dlsuite.hpo.storage import open_storage, resolve_storage

    cwd = Path.cwd()
    try:
        os.chdir(workdir)  # the study's default storage is relative to where it ran
        storage = open_storage(resolve_storage(None))
    finally:
        os.chdir(cwd)
    client = MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    totals, overheads = [], []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            if t.datetime_start is None or t.datetime_complete is None or RUN_ID_ATTR not in t.user_attrs:
                continue
            fit = client.get_run(t.user_attrs[RUN_ID_ATTR]).data.metrics.get("train_time_s")
            if fit is not None:
                total = (t.datetime_complete - t.datetime_start).total_seconds()
                totals.append(total)
                overheads.append(total - fit)
    if not overheads:
        return {}
    return {
        "trial_s_median": statistics.median(totals),
        "overhead_s_median": statistics.median(overheads),
        "overhead_fraction": sum(overheads) / sum(totals),
    }


# -- entry point ------------------------------------------------------------------------------
def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def _store(uri: str | None) -> Iterator[None]:
    """A temporary MLflow store for dlsuite's runs unless one is given."""
    if uri or os.environ.get("MLFLOW_TRACKING_URI"):
        if uri:
            os.environ["MLFLOW_TRACKING_URI"] = uri
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dlsuite-bench-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            yield
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the harness."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=3, help="runs of every mode (default 3)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in every mode")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. reduce-overhead")
    p.add_argument("--precision", default="32-true", help="32-true or bf16-mixed (every mode)")
    p.add_argument("--channels-last", action="store_true", help="channels_last in every mode")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--study", metavar="SPEC", help="also time `dlsuite study run SPEC` (e.g. studies/quick.yaml)")
    p.add_argument("--study-set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for the study")
    p.add_argument(
        "--study-workers", type=int, default=1, help="worker processes for the study (pinned to every visible GPU)"
    )
    p.add_argument("--tiny", action="store_true", help="a few steps of tiny models: checks the harness runs")
    p.add_argument("--uri", help="MLflow store for dlsuite's runs (default: a temporary one)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report; returns every figure."""
    args = build_parser().parse_args(argv)
    _quiet()
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [r for r in recipes if r not in RECIPES] + [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown recipe or mode {bad}; recipes: {', '.join(RECIPES)}; modes: {', '.join(MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # The same process-wide setting for every mode (dlsuite applies it itself; see its docstring).
    cheap_cuda_check()
    extra = [
        f"trainer.precision={args.precision}",
        f"trainer.compile={str(args.compile).lower()}",
        f"trainer.compile_mode={args.compile_mode}",
        f"trainer.channels_last={str(args.channels_last).lower()}",
        *args.set,
    ]
    if args.threads:  # dlsuite's "auto" would pick its own count from the load and change it process-wide
        extra.insert(0, f"trainer.threads={args.threads}")
    results = []
    with _store(args.uri):
        for name in recipes:
            res = bench_recipe(RECIPES[name], modes, args.repeats, device, args.tiny, extra)
            res["summary"] = summarize(res)
            results.append(res)
    info = machine()
    report: dict[str, Any] = {"machine": info, "device": device, "repeats": args.repeats, "results": results}
    print()
    print(format_report(info, results, args.repeats, device))
    if args.study:
        study = bench_study(args.study, args.study_set, args.study_workers)
        report["study"] = study
        if study:
            print(
                f"\nstudy {study['spec']}, {study['workers']} worker(s): {study['trials']} trials in "
                f"{study['wall_s']:.0f} s = {study['trials_per_hour']:.0f} trials/hour"
            )
            if "overhead_s_median" in study:
                print(
                    f"per trial: median {study['trial_s_median']:.1f} s, of which fixed overhead (outside the "
                    f"training loop) {study['overhead_s_median']:.1f} s; overhead {study['overhead_fraction']:.1%} "
                    "of trial time"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
