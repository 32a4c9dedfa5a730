"""Several "hosts" on one machine, and trials/hour of one study with 1, 2 and 3 of them.

A host here is a process group that shares nothing with the others but the PostgreSQL URL and the
tracking server's HTTP address: its own working folder (cwd), ``$HOME``, ``$TMPDIR`` (where ``study run``
writes its workers' spec file) and data cache, its own copy of the study file, its own log. Where the
kernel allows it (root with CAP_SYS_ADMIN), each host also gets its own hostname in a UTS namespace
(``unshare --uts``), so that nothing that checks "is this process on my host" (PIDs, owner tags) can
see another host's processes; otherwise the hosts share the machine's hostname and say so. Network
namespaces are not used: the hosts reach PostgreSQL and the tracking server on 127.0.0.1, as hosts
reach them on a LAN.

``tests/test_hosts.py`` starts its hosts with :func:`start_host`. Run as a script it measures trials/hour
of one study (same file, fresh database each time) with 1, 2 and 3 hosts of ``--workers`` each,
interleaved over ``--repeats`` rounds so a slow phase of a shared machine hits every count alike, and
prints the figures with the machine's load. It needs PostgreSQL (``--pg``, trust auth) and starts its own
``dlsuite server``::

    python -m benchmarks.hosts --trials 24 --repeats 2
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.test_studies import CNN, SEARCH, TINY  # the tiny MNIST-1D trials the study tests run

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("DLSUITE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def write_study(folder: Path, name: str, n_trials: int, epochs: int = 1) -> Path:
    """The study file (MNIST-1D CNN base, tiny overrides, a two-parameter space) in ``folder``."""
    path = folder / f"{name}.yaml"
    overrides = "\n".join(f"  - {o}" for o in [*TINY, f"trainer.max_epochs={epochs}"])
    body = SEARCH.replace("n_trials: 3", f"n_trials: {n_trials}")
    path.write_text(f"name: {name}\nbase: {CNN}\noverrides:\n{overrides}\n{body}")
    return path


def warm_data(study: Path, cache: Path) -> None:
    """Build the study's dataset into ``cache`` once (MNIST-1D takes seconds to a minute to generate).

    Each host then gets its own copy (:func:`start_host` ``data=``), as each real host has its dataset
    on local disk: a host's start-up is then its processes' start-up, not data generation.
    """
    from dlsuite.build import build_run
    from dlsuite.hpo.spec import load_study_spec

    before = os.environ.get("DLSUITE_DATA")
    os.environ["DLSUITE_DATA"] = str(cache)
    try:
        build_run(load_study_spec(str(study)).run_config())
    finally:
        if before is None:
            del os.environ["DLSUITE_DATA"]
        else:
            os.environ["DLSUITE_DATA"] = before


@functools.cache
def own_hostnames() -> bool:
    """Whether ``unshare --uts`` works here (root with CAP_SYS_ADMIN), to give each host its hostname."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def host_env(folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a host living in ``folder``: its own HOME, TMPDIR and data cache."""
    for sub in ("home", "tmp", "data", "work"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DLSUITE_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "HOME": str(folder / "home"),
            "TMPDIR": str(folder / "tmp"),
            "DLSUITE_DATA": str(folder / "data"),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
    )
    return env


def start_host(
    folder: Path,
    study: Path,
    storage: str,
    tracking: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
    data: Path | None = None,
    log_name: str = "host.log",
) -> subprocess.Popen[bytes]:
    """``dlsuite study run STUDY --workers N --storage URL --tracking-uri URL`` as a host in ``folder``.

    It runs in its own session (so ``os.killpg(proc.pid, SIGKILL)`` kills the whole host), in
    ``folder/work``, appending its output to ``folder/<log_name>``. ``data``: a data cache to copy
    into the host's own (once).
    """
    if data is not None and not (folder / "data").exists():
        shutil.copytree(data, folder / "data")
    cmd = [sys.executable, "-m", "dlsuite", "study", "run", str(study), "--workers", str(workers)]
    cmd += ["--storage", storage, "--tracking-uri", tracking]
    if own_hostnames():
        cmd = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', f"host-{folder.name}", *cmd]
    log = open(folder / log_name, "ab")
    try:
        return subprocess.Popen(
            cmd,
            cwd=folder / "work",
            env=host_env(folder, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def one_round(hosts: int, workers: int, trials: int, folder: Path, tracking: str, data: Path) -> float:
    """Wall seconds for ``hosts`` hosts to finish a fresh study of ``trials`` trials (fresh database)."""
    db = f"dlsuite_b_{uuid.uuid4().hex[:10]}"
    _admin_sql(f'CREATE DATABASE "{db}"')
    name = f"bench{uuid.uuid4().hex[:6]}"
    try:
        start = time.perf_counter()
        procs = []
        for i in range(hosts):
            host = folder / f"{name}-h{i}"
            host.mkdir(parents=True)
            study = write_study(host, name, trials)
            procs.append(start_host(host, study, f"{PG}/{db}", tracking, workers, data=data))
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        if any(codes):
            raise SystemExit(f"{hosts} host(s): exit codes {codes}; see {folder}/{name}-h*/host.log")
        return wall
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    """Measure and print trials/hour with 1, 2 and 3 hosts (interleaved rounds)."""
    import statistics
    import tempfile

    p = argparse.ArgumentParser(prog="python -m benchmarks.hosts", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=24, help="trials per study")
    p.add_argument("--workers", type=int, default=2, help="workers per host")
    p.add_argument("--hosts", default="1,2,3", help="host counts to compare")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    args = p.parse_args(argv)
    counts = [int(h) for h in args.hosts.split(",")]
    from tests.test_multihost import start_server, stop_server

    with tempfile.TemporaryDirectory(prefix="dlsuite-hosts-") as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "server", port)
        walls: dict[int, list[float]] = {h: [] for h in counts}
        data = Path(tmp) / "data"
        warm_data(write_study(Path(tmp), "warm", 1), data)
        try:
            for r in range(args.repeats):
                order = counts[r % len(counts) :] + counts[: r % len(counts)]  # rotate the order each round
                for h in order:
                    wall = one_round(h, args.workers, args.trials, Path(tmp), f"http://127.0.0.1:{port}", data)
                    walls[h].append(wall)
                    print(f"round {r}: {h} host(s) x {args.workers} workers: {args.trials} trials in {wall:.1f}s")
        finally:
            stop_server(server)
    load = os.getloadavg()
    print(
        f"\n{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"own hostnames per host: {own_hostnames()}; {args.trials} one-epoch MNIST-1D trials per study"
    )
    print("| hosts | workers | wall (each round) | trials/hour (median) |\n|---|---|---|---|")
    for h in counts:
        rate = statistics.median(3600 * args.trials / w for w in walls[h])
        shown = " / ".join(f"{w:.1f} s" for w in walls[h])
        print(f"| {h} | {h * args.workers} | {shown} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
