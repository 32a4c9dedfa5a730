"""Shared fixtures: every test gets a temporary MLflow store and working directory, so nothing is
ever written into the checkout's ``mlruns/``; generated datasets are cached once per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from dlsuite.build import load_run_config
from dlsuite.config import RunConfig

torch.set_num_threads(1)  # CI has 2 cores; one thread per test process avoids oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and trainer.threads=auto keeps it (it obeys this variable)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--accept-golden",
        action="store_true",
        help="rewrite tests/golden/*.json from the current code instead of comparing with it",
    )


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the session (MNIST-1D takes seconds to generate)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_cache: Path) -> str:
    """A fresh SQLite MLflow store in a temporary folder, set as the default; cwd moves there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLSUITE_DATA", str(data_cache))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


TINY = [
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "data.batch_size=50",
    "data.train_samples=300",
    "model.width=8",
]


def tiny_config(*overrides: str, base: str | None = None, **_: Any) -> RunConfig:
    """A seconds-long MNIST-1D CNN config, with further ``key=value`` overrides (validated)."""
    return load_run_config(base, [*TINY, *overrides])


REPO = Path(__file__).resolve().parents[1]


def cli_env(store_uri: str, data_cache: Path) -> dict[str, str]:
    """Environment for ``python -m dlsuite`` subprocesses: this checkout's code, the temp store."""
    import os

    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "MLFLOW_TRACKING_URI": store_uri,
            "DLSUITE_DATA": str(data_cache),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> Any:
    """Run the CLI in a subprocess and return the CompletedProcess (text output)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "dlsuite", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def send_a_dropped_sigint() -> None:
    """Deliver SIGINT inside a weakref callback, where Python prints the handler's exception and drops it
    (seen with SQLAlchemy's registry callbacks): only the handler's record of the signal can stop a run."""
    import os
    import signal
    import weakref

    class Thing:
        pass

    def dropped(_: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs in here; its Killed is dropped
        for _ in range(100):
            pass

    thing = Thing()
    ref = weakref.ref(thing, dropped)
    del thing
    assert ref() is None


def drop_a_sigint_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """:func:`send_a_dropped_sigint` right after the population's ``step``-th training step."""
    from dlsuite.population import train

    real = train.train_step
    calls = [0]

    def step_then_signal(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == step:
            send_a_dropped_sigint()
        return out

    monkeypatch.setattr(train, "train_step", step_then_signal)
