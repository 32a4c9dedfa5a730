"""The CLI: discoverability, bad input (exit 2, one line, nothing written), signals, orphan runs, UI."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from dlsuite.cli import build_parser, main
from dlsuite.tracking import record
from tests.conftest import TINY, cli_env, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "mnist1d_cnn.yaml")


def test_list_prints_registered_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "optimizers"]) == 0
    names = capsys.readouterr().out.split()
    assert {"sgd", "adam", "adamw", "lbfgs"} <= set(names) and names == sorted(names)
    for kind, expected in [
        ("models", "cnn"),
        ("datasets", "mnist1d"),
        ("schedulers", "cosine"),
        ("losses", "cross_entropy"),
        ("inits", "kaiming_normal"),
        ("activations", "gelu"),
    ]:
        assert main(["list", kind]) == 0
        assert expected in capsys.readouterr().out.split()
    assert main(["list"]) == 0
    assert "models" in capsys.readouterr().out
    assert main(["list", "modles"]) == 2
    assert "did you mean 'models'" in capsys.readouterr().err


def _commands(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    """Every command path of the CLI, nested ones (``study run``) included, from the parser itself."""
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, [*prefix, name])
    return out


@pytest.mark.parametrize("command", _commands(build_parser(), []), ids=lambda c: " ".join(c) or "dlsuite")
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "usage: dlsuite" in out
    description = out.split("\n\n")[1]  # argparse: usage, blank line, description, blank line, arguments
    assert not description.startswith(("positional arguments", "options")), f"{command}: no description"
    assert "``" not in out and ":mod:" not in out, f"{command}: raw reStructuredText in the help"


def test_old_finder_names_say_they_were_renamed(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune-lr", CONFIG, "--min-lr", "1", "--max-lr", "0.1"]) == 2  # still parsed, same checks
    assert "tune-lr was renamed to find-lr" in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert "find-lr" in help_text and "tune-lr" not in help_text  # hidden from the help


def test_missing_study_file_is_named_a_study_file(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "run", "nope.yaml"]) == 2
    assert "study file not found: nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lr=-1"], "optim.lr: Input should be greater than 0"),
        (["--set", "model.dropout=1"], "dropout"),
        (["--set", "data.batch_size=0"], "data.batch_size"),
        (["--set", "optim.optimizer=adam"], "unknown key 'optim.optimizer'"),
        (["--set", "model.name=transformr"], "unknown model 'transformr'"),
        (
            ["--set", "data.name=cifar10", "data.args={}", "data.root=/nonexistent/cifar", "data.download=false"],
            "expected files",
        ),
        (["--set", "data.name=image_folder", "data.args={}", "data.root=/nonexistent/imgs"], "class sub-folders"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    args: list[str], message: str, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", CONFIG, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("dlsuite: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()  # no store, no run, no checkpoint


def test_malformed_yaml_exit_code_and_line_in_a_real_process(store: str, data_cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n   name: adam\n")
    proc = run_cli(["train", str(bad)], cli_env(store, data_cache), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "malformed YAML at" in proc.stderr and "bad.yaml:3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns").exists()


def test_train_command_reports_the_run(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", CONFIG, "--set", *TINY, "tracking.experiment=cli"]) == 0
    out = capsys.readouterr().out
    assert "FINISHED" in out and "test_acc" in out
    c = MlflowClient(store)
    assert len(c.search_runs([c.get_experiment_by_name("cli").experiment_id])) == 1


def _wait_for_run(c: MlflowClient, experiment: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        exp = c.get_experiment_by_name(experiment)
        if exp is not None:
            runs = c.search_runs([exp.experiment_id])
            if runs and c.get_metric_history(runs[0].info.run_id, "train_loss"):
                return runs[0].info.run_id  # running and past its first epoch
        time.sleep(0.5)
    raise AssertionError("the run never started")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_end_the_run_killed(
    sig: signal.Signals, code: int, store: str, data_cache: Path, tmp_path: Path
) -> None:
    args = ["train", CONFIG, "--set", *TINY, "trainer.max_epochs=10000", "tracking.experiment=sig"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsuite", *args],
        env=cli_env(store, data_cache),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    c = MlflowClient(store)
    run_id = _wait_for_run(c, "sig")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and sig.name in run.data.tags[record.ERROR]


def test_a_signal_whose_exception_python_dropped_still_ends_the_run_killed(store: str) -> None:
    """Python runs a signal handler wherever the main thread is, also in a weakref callback, where the
    exception it raises is printed ("Exception ignored in ...") and dropped: seen as one SIGINT in four
    leaving ``dlsuite train`` training (SQLAlchemy's registry callbacks). The run must stop at the next
    batch all the same, end KILLED and name the signal."""
    from lightning.pytorch.callbacks import Callback

    from dlsuite.config import load_config
    from dlsuite.runner.run import train
    from dlsuite.tracking.runs import Killed
    from tests.conftest import send_a_dropped_sigint

    class SignalInsideACallback(Callback):
        def on_train_batch_end(self, trainer: object, *args: object) -> None:
            if getattr(trainer, "global_step", 0) == 2:
                send_a_dropped_sigint()

    cfg = load_config(CONFIG, [*TINY, "trainer.max_epochs=50", "tracking.experiment=dropped"])
    with pytest.raises(Killed, match="SIGINT"):
        train(cfg, callbacks=[SignalInsideACallback()])
    c = MlflowClient(store)
    (run,) = c.search_runs([c.get_experiment_by_name("dropped").experiment_id])
    assert run.info.status == "KILLED" and "SIGINT" in run.data.tags[record.ERROR]
    assert len(c.get_metric_history(run.info.run_id, "train_loss")) <= 1  # stopped at once, not after 50 epochs


def _sigkilled_run(env: dict[str, str], tmp_path: Path, c: MlflowClient) -> str:
    """Start ``dlsuite train`` on a long config, wait until its run is RUNNING, kill -9 it; the run id."""
    args = ["train", CONFIG, "--set", *TINY, "trainer.max_epochs=10000", "tracking.experiment=k9"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsuite", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_id = _wait_for_run(c, "k9")
    proc.kill()
    proc.wait()
    assert c.get_run(run_id).info.status == "RUNNING"  # nobody could end it
    return run_id


# The cheapest commands that open the store: each must end the orphan, not only the next good `train`.
REAPERS = {
    "list": ["list"],
    "study list": ["study", "list"],
    "refused train": ["train", "no_such_config.yaml"],
    "compare report of an unknown study": ["compare", "report", "nope", "--no-log"],
}


@pytest.mark.parametrize("command", list(REAPERS))
def test_sigkilled_run_is_reaped_by_the_next_command(
    command: str, store: str, data_cache: Path, tmp_path: Path
) -> None:
    env = cli_env(store, data_cache)
    c = MlflowClient(store)
    run_id = _sigkilled_run(env, tmp_path, c)
    proc = run_cli(REAPERS[command], env, tmp_path)
    assert proc.returncode == (0 if command in ("list", "study list") else 2), proc.stderr
    assert "ended 1 orphaned run KILLED" in proc.stderr and "Traceback" not in proc.stderr
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and "owner process died" in run.data.tags[record.ERROR]
    statuses = [r.info.status for r in c.search_runs([c.get_experiment_by_name("k9").experiment_id])]
    assert statuses == ["KILLED"]  # the reaping command wrote no run of its own


def test_ui_says_on_its_first_line_that_it_reaped(store: str, data_cache: Path, tmp_path: Path) -> None:
    env = cli_env(store, data_cache)
    c = MlflowClient(store)
    run_id = _sigkilled_run(env, tmp_path, c)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsuite", "ui", "--port", str(_free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert first.startswith("starting the MLflow UI on 127.0.0.1:") and "ended 1 orphaned run KILLED" in first, first
    assert c.get_run(run_id).info.status == "KILLED"


def test_a_refused_command_does_not_create_the_store(data_cache: Path, tmp_path: Path) -> None:
    store_uri = f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"
    proc = run_cli(["train", "no_such_config.yaml"], cli_env(store_uri, data_cache), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "absent").exists() and not (tmp_path / "mlruns").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ui_serves_the_store_on_localhost(store: str, data_cache: Path, tmp_path: Path) -> None:
    import queue
    import threading

    assert main(["train", CONFIG, "--set", *TINY]) == 0
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsuite", "ui", "--port", str(port)],
        env=cli_env(store, data_cache),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    try:
        # Readiness is the command's own line, printed once /health answers. The bound is generous on
        # purpose (a loaded shared CI box can take minutes); the time it took is printed, not asserted.
        start, seen = time.monotonic(), []
        while not any(x.startswith("MLflow UI at http://127.0.0.1:") for x in seen):
            assert time.monotonic() - start < 600, "no 'MLflow UI at' line within 600 s:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "dlsuite ui exited:\n" + "".join(seen)
        print(f"dlsuite ui answered after {time.monotonic() - start:.1f} s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200  # the announced server answers at once
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"mnist1d" in r.read()  # the UI reads our store (the config names this experiment)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
