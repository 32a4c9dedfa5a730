"""Fast paths of the training step, switched by ``trainer.*`` config fields.

What each does, and why it is on or off by default (figures: ``benchmarks/bench.py``):

- ``compile`` (off): ``nn.Module.compile`` compiles the model in place, so its ``state_dict`` keys
  and checkpoints stay those of the plain model. Compiling costs tens of seconds on a CPU; the
  time is measured apart (``compile_time_s``: the first epoch's excess over a median epoch).
- ``compile_mode: reduce-overhead`` replays CUDA graphs: the win for small, launch-bound models.
- ``channels_last`` (off): 4-D conv weights, and image batches through a forward pre-hook, in NHWC.
- ``cudnn_benchmark`` (on): cuDNN picks the fastest algorithm for the (fixed) shapes it sees.
- ``matmul_precision: high`` (on): TF32 matmuls on Ampere and later GPUs.
- ``precision: auto``: ``bf16-mixed`` on a GPU that supports bfloat16, ``32-true`` elsewhere.

Device-resident data (``data.in_memory``) and device-side metric accumulation (no ``.item()`` in
the step) live in ``dlsuite/data/base.py`` and ``dlsuite/tasks/classification.py``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from dlsuite.config import TrainerConfig
from dlsuite.tracking import record


def cheap_cuda_check() -> None:
    """Make torch's per-step "is CUDA available?" check cheap on a machine with no GPU.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that a parent process does not
    initialise CUDA before forking DDP workers). ``Adam.step`` asks ``torch.cuda.is_available()``
    on every call, and with that variable each call loads NVML through ctypes: 0.16 ms per step on
    the 2-core CPU, 10% of a small model's step. With no CUDA device there is nothing a fork could
    poison, so the plain runtime check (about 2 us) is used instead.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


def uses_gpu(t: TrainerConfig) -> bool:
    """Whether the trainer will run on a CUDA device."""
    if t.accelerator in ("gpu", "cuda"):
        return True
    return t.accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(t: TrainerConfig) -> str:
    """The Lightning precision string: ``auto`` becomes ``bf16-mixed`` where the GPU supports it."""
    if t.precision != "auto":
        return t.precision
    if uses_gpu(t) and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return "32-true"


WORKER_ENV = "DLSUITE_STUDY_WORKER"
"""Set in study worker processes, which choose their thread count from the number of workers."""


_RESERVED = [0]


@contextlib.contextmanager
def cores_reserved(n: int) -> Iterator[None]:
    """Within the block ``auto`` threads leave ``n`` cores to a helper of this process (a study's figure
    helper). torch's threads wait for each other at every operation: one of them sharing its core with
    a busy process slows the whole step (a small model's step on 2 cores: 2.0 ms alone, 9.2 ms beside a
    busy process with 2 threads, 2.2 ms with 1)."""
    _RESERVED[0] += n
    try:
        yield
    finally:
        _RESERVED[0] -= n


def auto_threads() -> int:
    """The CPU threads a run should use: the cores this process may run on minus the machine's load
    (1-minute average, which does not count this process before it starts) and minus the cores
    reserved for this process's helpers (:func:`cores_reserved`), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume a quiet machine
        busy = 0.0
    return max(1, min(cores, int(cores - busy - _RESERVED[0] + 0.5)))


def configure_backends(t: TrainerConfig) -> None:
    """Process-wide settings: CPU threads, matmul precision (cuDNN autotuning is the Trainer's ``benchmark``)."""
    cheap_cuda_check()
    torch.set_float32_matmul_precision(t.matmul_precision)
    if t.threads != "auto":
        torch.set_num_threads(t.threads)
    elif os.environ.get("OMP_NUM_THREADS") is None and not os.environ.get(WORKER_ENV):
        # An explicit OMP_NUM_THREADS and a study worker's own split (dlsuite.hpo.worker) are obeyed.
        torch.set_num_threads(auto_threads())


def _to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def prepare_model(model: nn.Module, t: TrainerConfig) -> nn.Module:
    """Apply ``channels_last`` and ``compile`` to the plain model, in place; returns it."""
    if t.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # A conv keeps the layout of its input: convert image batches as they enter the model.
        model.register_forward_pre_hook(_to_channels_last)
    if t.compile:
        # In place: parameters and state_dict keys stay those of the plain model (no "_orig_mod.").
        model.compile(mode=None if t.compile_mode == "default" else t.compile_mode)
    return model


class CudaGraphSteps(Callback):
    """Tell CUDA-graph trees where each training step begins (``compile_mode: reduce-overhead``).

    Without the mark, outputs of one replay that are still referenced when the next replay runs
    (Lightning keeps the step's loss until the batch ends) can be overwritten: torch then raises
    "accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run".
    """

    def on_train_batch_start(self, *args: Any) -> None:
        torch.compiler.cudagraph_mark_step_begin()


def step_callbacks(t: TrainerConfig) -> list[Callback]:
    """Callbacks a fast path needs in the training loop."""
    if t.compile and t.compile_mode == "reduce-overhead" and uses_gpu(t):
        return [CudaGraphSteps()]
    return []


class EpochTimer(Callback):
    """Wall time of every training epoch (validation and per-epoch logging included).

    :meth:`summary` reports the names in ``SUMMARY_KEYS``.

    Boundaries are taken at epoch starts and at the end of training, after synchronising the
    device, so that queued GPU work is counted in the epoch that queued it. Only a few calls per
    epoch: nothing is added to the step.
    """

    SUMMARY_KEYS = record.TIMER_METRICS

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.steps: list[int] = []

    def _mark(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        self.marks.append(time.perf_counter())
        self.steps.append(int(trainer.global_step))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(trainer)

    @property
    def epoch_seconds(self) -> list[float]:
        """Duration of each completed epoch."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def summary(self, compiled: bool = False) -> dict[str, float]:
        """``epoch_time_s`` (median after the first epoch), ``train_time_s`` (all epochs),
        ``steps_per_s`` over epochs after the first, and ``compile_time_s`` (first epoch's excess
        over the median) when compiling."""
        secs = self.epoch_seconds
        if not secs:
            return {}
        later = secs[1:] or secs
        median = statistics.median(later)
        # the training loop alone (validation included): fit_time_s adds set-up and end-of-fit plots
        out = {"epoch_time_s": median, "train_time_s": self.marks[-1] - self.marks[0]}
        steps = self.steps[-1] - (self.steps[1] if len(secs) > 1 else self.steps[0])
        elapsed = self.marks[-1] - (self.marks[1] if len(secs) > 1 else self.marks[0])
        if steps > 0 and elapsed > 0:
            out["steps_per_s"] = steps / elapsed
        if compiled:
            out["compile_time_s"] = max(0.0, secs[0] - median)
        return out
