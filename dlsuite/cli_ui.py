"""``dlsuite ui``: MLflow's server on this suite's store, started light and announced once it answers.

``mlflow server`` starts four web workers and background job consumers by default; on a loaded 2-core
machine that took minutes to answer. One worker and no job consumers (the suite queues no MLflow jobs)
serve one user's browser. The address is printed only once ``/health`` answers, so it can be opened at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from types import FrameType

from dlsuite.errors import DlsuiteError


def ui_command(uri: str | None, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line serving this suite's store."""
    from dlsuite.tracking.store import artifact_root, resolve_uri

    resolved = resolve_uri(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", resolved]
    cmd += ["--host", host, "--port", str(port), "--workers", str(workers)]
    root = artifact_root(resolved)
    if root:
        cmd += ["--default-artifact-root", root]
    return cmd


def answers(url: str) -> bool:
    """Whether the server's health endpoint answers 200 now."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310  http, built above
            return bool(r.status == 200)
    except OSError:
        return False


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the MLflow UI on this suite's store (bound to 127.0.0.1 unless --host says otherwise)."""
    if args.uri is None and not os.environ.get("MLFLOW_TRACKING_URI") and not os.path.exists("mlruns"):
        raise DlsuiteError("no ./mlruns store here yet: train a run first, or pass --uri")
    if args.workers < 1:
        raise DlsuiteError(f"--workers must be >= 1 (got {args.workers})")
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no huey consumers: no jobs here
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104  an address to open
    url = f"http://{shown}:{args.port}"
    first = f"starting the MLflow UI on {args.host}:{args.port} ..."
    if getattr(args, "reaped", None):  # set by cli.main, which reaps before every store-opening command
        from dlsuite.tracking.runs import reaped_note

        first += f" ({reaped_note(args.reaped)})"
    print(first, flush=True)
    server = subprocess.Popen(ui_command(args.uri, args.host, args.port, args.workers), env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        server.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    start = time.monotonic()
    try:
        while not answers(url):
            if server.poll() is not None:
                raise DlsuiteError(f"the MLflow server exited with code {server.returncode} (port {args.port} in use?)")
            time.sleep(0.5)
        print(f"MLflow UI at {url} (answered after {time.monotonic() - start:.0f} s; Ctrl-C to stop)", flush=True)
        return server.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached the server too (same process group)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def add_ui(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dlsuite ui``."""
    p = sub.add_parser("ui", help="open the MLflow UI on the run store", description=cmd_ui.__doc__)
    p.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=1, help="web worker processes (default 1: one user's browser)")
    p.set_defaults(func=cmd_ui, opens_store=True, tells_reaped=True)
