"""A study worker process: ``python -m dlsuite.hpo.worker SPEC.json --storage URL --index I``.

Started by ``dlsuite study run --workers N``. It dies with its coordinator (PR_SET_PDEATHSIG), and
turns SIGTERM into KeyboardInterrupt so that its running trial is re-queued and its run ends KILLED.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from dlsuite.tracking.runs import die_with_parent


def main(argv: list[str] | None = None) -> int:
    """Run one worker until the study's budget is met; exit 2 on a config error."""
    p = argparse.ArgumentParser(prog="dlsuite.hpo.worker")
    p.add_argument("spec")
    p.add_argument("--storage", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--parent")
    p.add_argument("--deadline", type=float)
    p.add_argument("--workers", type=int, default=1, help="workers on this host, to share the CPU threads")
    args = p.parse_args(argv)
    die_with_parent()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)
    from dlsuite.errors import DlsuiteError
    from dlsuite.hpo.spec import StudySpec
    from dlsuite.hpo.study import work
    from dlsuite.runner.quiet import quiet

    quiet()
    import torch

    # N workers each using every core oversubscribe the CPU; share the cores out instead.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.workers)))
    from dlsuite.techniques.speed import WORKER_ENV

    os.environ[WORKER_ENV] = "1"  # trainer.threads=auto keeps this split
    spec = StudySpec.model_validate_json(Path(args.spec).read_text())
    try:
        work(spec, args.storage, args.parent, args.index, args.deadline)
    except DlsuiteError as exc:
        print(f"dlsuite worker {args.index}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 143
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
