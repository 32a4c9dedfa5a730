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
    # Restoring the finders' own temporary checkpoints (and the best one before testing) says that
    # weights_only defaulted to False: an internal detail. The batch-size finder's "will continue with
    # full run" is wrong here: `find-batch-size` stops after the search.
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.tuner.batch_size_scaling").setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*smaller than the logging interval.*",
        ".*treespec.*",
        ".*Checkpoint directory.*exists.*",
        # The task logs epoch numbers it has already reduced over every rank (tasks/epoch.py: take).
        ".*when logging on epoch level in distributed setting.*",
    ):
        warnings.filterwarnings("ignore", message=msg)
