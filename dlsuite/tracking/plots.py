"""PNG figures logged with every run: learning curves and the confusion matrix.

Every run (sequential trial, population member, seed) draws the same two figures, so their cost is
paid once per run: about 0.37 s drawn afresh on a 2-core CPU, most of it matplotlib laying out axes,
ticks and a hundred cell labels, a third of it ``tight_layout``. A figure is therefore built and laid
out once per shape (the class names; the one learning-curves layout) and kept: each later run only
swaps its data in and saves. The kept figures have no layout engine (``tight_layout`` leaves a
placeholder one behind, which makes every ``savefig`` lay the whole figure out a second time), the
confusion matrix repaints only its run's own artists over a saved background (matplotlib's blitting),
and PNGs are written with fast zlib compression: 0.22 s a run becomes about 0.1 s. The figures are
``matplotlib.figure.Figure`` objects, not pyplot ones, so nothing piles up in pyplot's registry, and
one lock serialises their use across threads.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs go on servers and in CI
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

_LOCK = threading.Lock()
_SPLITS = (("train", "-", "train"), ("val", "--", "validation"))
_PNG = {"compress_level": 1}  # zlib's fastest: half the encoding time of the default for ~1.5x the bytes


def _laid_out(fig: Figure) -> None:
    """Lay ``fig`` out once, for good: ``tight_layout`` and then no layout engine at all."""
    fig.tight_layout()
    fig.set_layout_engine(None)  # not the placeholder tight_layout leaves, which re-lays-out every savefig


class _Curves:
    """The learning-curves figure: loss and accuracy panels, a train and a validation line in each."""

    def __init__(self) -> None:
        self.fig = Figure(figsize=(10, 4))
        self.axes = dict(zip(("loss", "acc"), self.fig.subplots(1, 2), strict=True))
        self.lines = {
            (key, split): ax.plot([], [], style, label=label)[0]
            for key, ax in self.axes.items()
            for split, style, label in _SPLITS
        }
        self.drawn: list[Any] = []  # the run's own artists (gap shading, best-epoch marker), removed after
        for key, ax in self.axes.items():
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        self.fig.suptitle("learning curves: train and validation, the gap between them shaded")
        self.axes["loss"].set_ylim(0, 2.5)  # representative limits, so the one layout fits every run's ticks
        self.axes["acc"].set_ylim(0, 1)
        _laid_out(self.fig)
        for ax in self.axes.values():
            ax.autoscale(True)  # set_ylim turned it off; each run's data sets its own limits

    def draw(self, history: list[dict[str, float]], path: Path) -> None:
        epochs = np.asarray([int(r["epoch"]) for r in history], dtype=float)
        for key, ax in self.axes.items():
            curves = {}
            for split, _, _ in _SPLITS:
                curves[split] = np.asarray([r.get(f"{split}_{key}", np.nan) for r in history], dtype=float)
                self.lines[key, split].set_data(epochs, curves[split])
            if not np.all(np.isnan(curves["val"])):  # the generalisation gap, shaded between the two curves
                self.drawn.append(
                    ax.fill_between(epochs, curves["train"], curves["val"], color="C3", alpha=0.15, label="gap")
                )
            ax.relim()
            ax.autoscale_view()
        vals = np.asarray([r.get("val_acc", np.nan) for r in history], dtype=float)
        if vals.size and not np.all(np.isnan(vals)):
            best = int(epochs[int(np.nanargmax(vals))])
            self.drawn.append(
                self.axes["acc"].axvline(best, color="grey", lw=0.8, ls=":", label=f"best val (epoch {best})")
            )
        for ax in self.axes.values():
            ax.legend()
        try:
            self.fig.savefig(path, dpi=100, pil_kwargs=_PNG)
        finally:
            for artist in self.drawn:
                artist.remove()
            self.drawn = []


class _Confusion:
    """The confusion-matrix figure for one list of class names: image, colour bar, cell labels.

    Axes, ticks, labels and colour bar are the same for every run: they are drawn once into a saved
    background, and each run repaints only the image, the title and the cell labels over it.
    """

    def __init__(self, classes: tuple[str, ...]) -> None:
        n = len(classes)
        size = min(max(4.5, 0.5 * n), 20.0)
        self.fig = Figure(figsize=(size + 1.0, size), dpi=100)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.subplots()
        self.image = self.ax.imshow(np.zeros((n, n)), cmap="Blues", vmin=0, vmax=1)
        self.fig.colorbar(self.image, ax=self.ax, fraction=0.046, pad=0.04, label="share of the true class (row)")
        self.title = self.ax.set_title("test set confusion matrix (10000 examples; cells: counts)")
        self.cells = []
        if n <= 20:
            self.cells = [
                [self.ax.text(j, i, "0", ha="center", va="center", fontsize=7) for j in range(n)] for i in range(n)
            ]
            self.ax.set_xticks(range(n), classes, rotation=90)
            self.ax.set_yticks(range(n), classes)
        self.ax.set_xlabel("predicted")
        self.ax.set_ylabel("true")
        _laid_out(self.fig)
        # in matplotlib's own drawing order: the image, the frame over its edges, then the texts
        self.own = [self.image, *self.ax.spines.values(), self.title, *(c for row in self.cells for c in row)]
        for artist in self.own:
            artist.set_animated(True)  # left out of the background's draw
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def draw(self, matrix: np.ndarray, split: str, path: Path) -> None:
        norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        self.image.set_data(norm)
        self.title.set_text(f"{split} set confusion matrix ({int(matrix.sum())} examples; cells: counts)")
        for i, row in enumerate(self.cells):
            for j, cell in enumerate(row):
                cell.set_text(str(int(matrix[i, j])))
                cell.set_color("white" if norm[i, j] > 0.5 else "black")
        self.canvas.restore_region(self.background)
        for artist in self.own:
            self.ax.draw_artist(artist)
        imsave(path, np.asarray(self.canvas.buffer_rgba()), format="png", pil_kwargs=_PNG)


_curves: list[_Curves] = []
_confusions: dict[tuple[str, ...], _Confusion] = {}


def learning_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Train/validation loss and accuracy per epoch, with the best validation epoch marked."""
    with _LOCK:
        if not _curves:
            _curves.append(_Curves())
        _curves[0].draw(history, path)
    return path


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, split: str = "test") -> Path:
    """Row-normalised confusion matrix of ``split`` (true class by row), counts in the cells, a colour bar."""
    key = tuple(classes)
    with _LOCK:
        if key not in _confusions:
            if len(_confusions) >= 8:  # a long-lived process with many datasets keeps the newest few
                _confusions.pop(next(iter(_confusions)))
            _confusions[key] = _Confusion(key)
        _confusions[key].draw(np.asarray(matrix), split, path)
    return path


def draw_run_plots(
    out: Path, history: list[dict[str, float]], matrix: np.ndarray | None, classes: list[str] | None
) -> None:
    """Draw a run's learning curves (when it has epochs) and test confusion matrix (when given) into ``out``."""
    if history:
        learning_curves(history, out / "learning_curves.png")
    if matrix is not None:
        names = classes or [str(k) for k in range(len(matrix))]
        confusion_matrix(matrix, names, out / "confusion_matrix.png", split="test")


def log_run_plots(
    client: Any,
    run_id: str,
    history: list[dict[str, float]],
    matrix: np.ndarray | None,
    classes: list[str] | None,
) -> None:
    """Draw a run's figures (:func:`draw_run_plots`) and log them under ``plots/``, as every run (sequential,
    population member, seed) records them; in a study's worker, by its helper process
    (:mod:`dlsuite.tracking.plot_queue`)."""
    from dlsuite.tracking import plot_queue

    queue = plot_queue.active()
    if queue is not None:
        queue.submit(client, run_id, history, matrix, classes)
        return
    with tempfile.TemporaryDirectory(prefix="dlsuite-art-") as tmp:
        draw_run_plots(Path(tmp), history, matrix, classes)
        log_drawn(client, run_id, Path(tmp))


def log_drawn(client: Any, run_id: str, out: Path) -> None:
    """Log the figures :func:`draw_run_plots` drew into ``out`` under the run's ``plots/``, if any."""
    if any(out.iterdir()):
        client.log_artifacts(run_id, str(out), "plots")  # one store call for both files
