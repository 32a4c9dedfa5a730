"""``dlsuite server``: a real MLflow tracking server on a free local port, SQLite backend, served artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from dlsuite.cli import main
from dlsuite.errors import DlsuiteError
from dlsuite.tracking.store import check_uri
from tests.test_multihost import free_port, pg_url  # noqa: F401  pg_url: a fixture

ROOT = Path(__file__).resolve().parents[1]


def test_auth_without_a_password_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert main(["server", "--auth", "--dir", str(tmp_path / "srv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in err[0] and "no default password" in err[0]
    assert not (tmp_path / "srv").exists()


def test_an_unreachable_backend_store_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/mlflow"
    assert main(["server", "--backend-store-uri", uri, "--dir", str(tmp_path / "srv")]) == 2
    assert "unreachable" in capsys.readouterr().err and not (tmp_path / "srv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def test_server_records_runs_and_serves_artifacts_from_its_folder(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "dlsuite", "server", "--dir", str(tmp_path / "srv"), "--port", str(port)]
    if backend == "postgres":
        cmd += ["--backend-store-uri", request.getfixturevalue("pg_url")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 180
        while True:
            try:
                check_uri(uri, timeout=2)
                break
            except DlsuiteError:
                assert proc.poll() is None and time.time() < end, "the server did not come up"
                time.sleep(0.5)
        client = mlflow.MlflowClient(uri)
        exp = client.create_experiment("srv")
        run = client.create_run(exp)
        note = tmp_path / "note.txt"
        note.write_text("hello")
        client.log_artifact(run.info.run_id, str(note))
        client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
        served = list((tmp_path / "srv" / "artifacts").rglob("note.txt"))
        assert len(served) == 1 and served[0].read_text() == "hello"  # stored by the server, not the client
        assert (tmp_path / "srv" / "mlflow.db").is_file() == (backend == "sqlite")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
