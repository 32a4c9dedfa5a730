"""The environment a run was made in: versions, git commit, host, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

_PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "mlflow", "optuna", "numpy")


def git_commit() -> str:
    """The commit of the dlsuite checkout (``+dirty`` if modified), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name() -> str:
    """The accelerator the run uses by default, in words."""
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def environment() -> dict[str, str]:
    """Flat ``env.*`` entries logged as params of every run."""
    out = {"env.python": platform.python_version(), "env.platform": platform.platform(), "env.git_commit": git_commit()}
    for pkg in _PACKAGES:
        try:
            out[f"env.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    out["env.device"] = device_name()
    return out
