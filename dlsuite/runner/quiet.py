"""Quieter logs for every entry point (the CLI and study worker processes)."""

from __future__ import annotations

import logging
import warnings


def quiet() -> None:
    """Silence start-up chatter of Lightning, alembic and warnings that do not apply to the suite."""
    # Lightning's start-up chatter and hints about DataLoader workers do not apply to the
    # in-memory path; keep warnings that matter.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*smaller than the logging interval.*",
        ".*treespec.*",
        ".*Checkpoint directory.*exists.*",
    ):
        warnings.filterwarnings("ignore", message=msg)
