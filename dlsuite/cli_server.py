"""``dlsuite server``: an MLflow tracking server for studies run from several hosts.

It runs ``mlflow server`` with a SQLite backend store in ``--dir`` (default) or a PostgreSQL one
(``--backend-store-uri postgresql+psycopg://...``), serving artifacts from a folder it names
(``--serve-artifacts --artifacts-destination``), so that hosts share no file system. It listens on
127.0.0.1 unless ``--host`` says otherwise. ``--auth`` turns on MLflow's basic-auth app; the admin
password comes from ``$MLFLOW_AUTH_ADMIN_PASSWORD`` (MLflow's own variable) and there is no default.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from dlsuite.errors import ConfigError

PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # noqa: S105  the variable's name, not a password
USER_ENV = "DLSUITE_SERVER_ADMIN_USER"


def server_command(args: argparse.Namespace, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for ``args``."""
    backend = args.backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    artifacts = Path(args.artifacts).resolve() if args.artifacts else folder / "artifacts"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    cmd += ["--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    env = dict(os.environ)
    if args.auth:
        ini = folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
            f"admin_username = {os.environ.get(USER_ENV, 'admin')}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        cmd += ["--app-name", "basic-auth"]
    return cmd, env


def cmd_server(args: argparse.Namespace) -> int:
    """Start the MLflow tracking server; Ctrl-C stops it."""
    if args.auth and not os.environ.get(PASSWORD_ENV):
        raise ConfigError(
            f"--auth needs the admin password in ${PASSWORD_ENV} (and optionally the user in ${USER_ENV}); "
            "there is no default password"
        )
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1..65535 (got {args.port})")
    if args.backend_store_uri:
        from dlsuite.tracking.store import check_uri

        check_uri(args.backend_store_uri)
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cmd, env = server_command(args, folder)
    print(f"MLflow tracking server at http://{args.host}:{args.port} (artifacts served; Ctrl-C to stop)", flush=True)
    return subprocess.run(cmd, env=env, check=False).returncode


def add_server(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``dlsuite server``."""
    p = sub.add_parser(
        "server", help="run an MLflow tracking server for several hosts", description=(__doc__ or "").replace("``", "")
    )
    p.add_argument("--dir", default="mlflow-server", help="folder for the SQLite store, artifacts and auth database")
    p.add_argument(
        "--backend-store-uri",
        help="backend store (default sqlite:///DIR/mlflow.db), e.g. postgresql+psycopg://user@db/mlflow",
    )
    p.add_argument("--artifacts", help="folder the server stores and serves artifacts from (default DIR/artifacts)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve other hosts)"
    )
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--auth", action="store_true", help=f"basic auth; admin password from ${PASSWORD_ENV}")
    p.set_defaults(func=cmd_server)
