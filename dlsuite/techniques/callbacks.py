"""The Lightning callbacks a run config switches on (their checks live in ``dlsuite.build.validate``).

SWA and EMA come from Lightning (``StochasticWeightAveraging``, ``EMAWeightAveraging``); the snapshot
ensemble and the diagnostics are dlsuite's own callbacks.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, StochasticWeightAveraging

from dlsuite.config import RunConfig


def technique_callbacks(cfg: RunConfig) -> list[Callback]:
    """Callbacks for SWA, EMA, snapshot ensembles and diagnostics, as ``cfg`` asks."""
    from dlsuite.techniques.diagnostics import Diagnostics
    from dlsuite.techniques.ensembles import SnapshotEnsemble

    r = cfg.regularization
    out: list[Callback] = []
    if r.swa is not None:
        start: int | float = r.swa.epoch_start if r.swa.epoch_start < 1 else int(r.swa.epoch_start)
        out.append(
            StochasticWeightAveraging(
                swa_lrs=r.swa.lr or cfg.optim.lr,
                swa_epoch_start=start,
                annealing_epochs=r.swa.annealing_epochs,
                annealing_strategy=r.swa.annealing_strategy,
            )
        )
    if r.ema is not None:
        out.append(EMAWeightAveraging(decay=r.ema.decay, update_starting_at_step=r.ema.start_step))
    if r.ensemble is not None and r.ensemble.method == "snapshot":
        out.append(SnapshotEnsemble(cfg))
    if cfg.tracking.diagnostics.enabled:
        out.append(Diagnostics(cfg.tracking.diagnostics, plots=cfg.tracking.plots and cfg.tracking.diagnostics.plots))
    return out
