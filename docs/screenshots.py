"""Screenshots of the MLflow UI on a fresh store, as the README shows them (not run by the tests).

Trains one run and a small search study into a temporary store, starts ``dlsuite ui`` on it, and takes
headless Chromium screenshots of the experiment list, the study's runs table (its saved view, with the
metric and searched values as columns), a run's overview (its Dataset) and the experiment's logged
models (each run's tested weights, linked to the run and its final metrics) into ``docs/img/``.

    apt-get install -y chromium           # Debian; or set CHROMIUM=/path/to/chrome
    PYTHONPATH=. .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
STUDY = """name: lr-search
base: {base}
overrides: [trainer.max_epochs=3, data.train_samples=1000, tracking.plots=false]
space:
  optim.lr: {{type: float, low: 1.0e-4, high: 3.0e-2, log: true}}
  data.batch_size: [32, 64, 128]
metric: best_val_acc
n_trials: 6
pruner: {{name: median, n_startup_trials: 2}}
"""


def dlsuite(*args: str, env: dict[str, str], cwd: str) -> str:
    """Run the CLI; return its output."""
    out = subprocess.run([sys.executable, "-m", "dlsuite", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"dlsuite {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def shot(url: str, path: Path, width: int = 1400, height: int = 900) -> None:
    """A screenshot of ``url`` after its scripts have run."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium, or set CHROMIUM")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        cmd += ["--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
        cmd += [f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=20000"]
        subprocess.run([*cmd, f"--screenshot={path}", url], capture_output=True, timeout=180, check=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlsuite-shots-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlruns/mlflow.db")
        env["DLSUITE_STUDY_STORAGE"] = f"{tmp}/mlruns/optuna/journal.log"
        cfg = str(ROOT / "configs" / "mnist1d_cnn.yaml")
        common = ["trainer.max_epochs=5", "trainer.progress_bar=false"]
        dlsuite("train", cfg, "--set", *common, env=env, cwd=tmp)
        run_out = dlsuite("train", cfg, "--set", *common, "optim.lr=3e-3", env=env, cwd=tmp)
        run_id = run_out.split()[1]
        Path(tmp, "study.yaml").write_text(STUDY.format(base=cfg))
        view = next(
            line.rsplit(" ", 1)[1]
            for line in dlsuite("study", "run", "study.yaml", env=env, cwd=tmp).splitlines()
            if "viewStateShareKey" in line
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ui = subprocess.Popen(
            [sys.executable, "-m", "dlsuite", "ui", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in ui.stdout or []], daemon=True).start()
        try:
            start = time.monotonic()
            while not (line := lines.get(timeout=600)).startswith("MLflow UI at"):
                pass
            print(f"ui: {line.strip()} ({time.monotonic() - start:.0f} s)")
            base = f"http://127.0.0.1:{port}"
            from mlflow import MlflowClient

            exp = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.experiment_id
            shot(f"{base}/#/experiments", OUT / "ui_experiments.png", height=420)
            # wide: the view's metric and parameter columns come after Dataset and Duration
            shot(f"{base}{view}", OUT / "ui_study_runs.png", width=2300, height=560)
            shot(f"{base}/#/experiments/{exp}/runs/{run_id}", OUT / "ui_run_dataset.png", height=560)
            shot(f"{base}/#/experiments/{exp}/models", OUT / "ui_models.png", width=2300, height=420)
        finally:
            os.killpg(ui.pid, 15)
            ui.wait(timeout=30)


if __name__ == "__main__":
    main()
