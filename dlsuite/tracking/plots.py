"""PNG figures logged with every run: learning curves and the confusion matrix."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs go on servers and in CI
import matplotlib.pyplot as plt
import numpy as np


def learning_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Train/validation loss and accuracy per epoch, with the best validation epoch marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [int(r["epoch"]) for r in history]
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        curves = {}
        for split, style in (("train", "-"), ("val", "--")):
            curves[split] = np.asarray([r.get(f"{split}_{key}", np.nan) for r in history], dtype=float)
            ax.plot(epochs, curves[split], style, label="validation" if split == "val" else "train")
        if not np.all(np.isnan(curves["val"])):  # the generalisation gap, shaded between the two curves
            ax.fill_between(epochs, curves["train"], curves["val"], color="C3", alpha=0.15, label="gap")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    vals = [r.get("val_acc", np.nan) for r in history]
    if vals and not np.all(np.isnan(vals)):
        best = epochs[int(np.nanargmax(vals))]
        ax_acc.axvline(best, color="grey", lw=0.8, ls=":", label=f"best val (epoch {best})")
    ax_loss.legend()
    ax_acc.legend()
    fig.suptitle("learning curves: train and validation, the gap between them shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, split: str = "test") -> Path:
    """Row-normalised confusion matrix of ``split`` (true class by row), counts in the cells, a colour bar."""
    n = len(classes)
    size = min(max(4.5, 0.5 * n), 20.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (row)")
    ax.set_title(f"{split} set confusion matrix ({int(matrix.sum())} examples; cells: counts)")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_run_plots(
    client: Any,
    run_id: str,
    history: list[dict[str, float]],
    matrix: np.ndarray | None,
    classes: list[str] | None,
) -> None:
    """Draw a run's learning curves (when it has epochs) and test confusion matrix (when given) and log
    them under ``plots/``, as every run (sequential, population member, seed) records them."""
    with tempfile.TemporaryDirectory(prefix="dlsuite-art-") as tmp:
        out = Path(tmp)
        if history:
            learning_curves(history, out / "learning_curves.png")
        if matrix is not None:
            names = classes or [str(k) for k in range(len(matrix))]
            confusion_matrix(matrix, names, out / "confusion_matrix.png", split="test")
        if any(out.iterdir()):
            client.log_artifacts(run_id, str(out), "plots")  # one store call for both files
