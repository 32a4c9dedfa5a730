"""Start-up cost of the light commands: wall time, CPU time and modules imported, median of N runs.

    python -m benchmarks.import_time                       # this checkout
    python -m benchmarks.import_time --tree /path/to/old   # another checkout, e.g. a commit before a change

Runs each command in a fresh interpreter with ``PYTHONPATH`` set to the tree, interleaving the trees
when several are given, and prints one row per (tree, command). CPU time (user + system of the child)
is the steadier figure on a shared machine; the module count does not depend on load at all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = "import runpy, sys, json, atexit; atexit.register(lambda: print('MODULES', len(sys.modules), file=sys.stderr))"
COMMANDS = [["--help"], ["list", "models"], ["study", "run", "{tree}/studies/quick.yaml", "--check"]]


def run_once(tree: Path, args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and number of modules of one ``python -m dlsuite ARGS``."""
    code = f"{PROBE}; sys.argv = ['dlsuite', *{json.dumps(args)}]; runpy.run_module('dlsuite', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    modules = next((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MODULES")), -1)
    return wall, cpu, modules


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", type=Path, help="checkout to time (repeatable; default: this one)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    trees = args.tree or [REPO]
    rows: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for _ in range(args.repeats):
        for tree in trees:
            for cmd in COMMANDS:
                argv = [a.format(tree=tree) for a in cmd]
                rows.setdefault((str(tree), " ".join(cmd)), []).append(run_once(tree, argv))
    print("| tree | command | wall s (median) | CPU s (median) | modules |\n|---|---|---|---|---|")
    for (tree, cmd), runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"| {tree} | `dlsuite {cmd.replace('{tree}/', '')}` | {wall:.2f} | {cpu:.2f} | {runs[0][2]} |")


if __name__ == "__main__":
    main()
