"""The run figures: a figure kept between runs draws exactly what a freshly built one draws."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlsuite.tracking import plots


def _history(epochs: int, val: bool, scale: float) -> list[dict[str, float]]:
    rows = []
    for e in range(epochs):
        row = {"epoch": float(e), "train_loss": scale * np.exp(-e / 5), "train_acc": 1 - np.exp(-e / 4)}
        if val:
            row |= {"val_loss": scale * np.exp(-e / 7) + 0.2, "val_acc": 0.8 - 0.7 * np.exp(-e / 4)}
        rows.append(row)
    return rows


def _fresh() -> None:
    plots._curves.clear()
    plots._confusions.clear()


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_reused_learning_curves_figure_keeps_nothing_of_the_run_before(tmp_path: Path) -> None:
    # A long run with validation (gap shaded, best epoch marked), then a short one without: nothing of the
    # first (shading, marker, axis limits, legend entries) may show in the second.
    _fresh()
    plots.learning_curves(_history(30, True, 2.3), tmp_path / "long.png")
    plots.learning_curves(_history(6, False, 9.0), tmp_path / "reused.png")
    _fresh()
    plots.learning_curves(_history(6, False, 9.0), tmp_path / "fresh.png")
    assert np.array_equal(_pixels(tmp_path / "reused.png"), _pixels(tmp_path / "fresh.png"))
    assert not np.array_equal(_pixels(tmp_path / "long.png"), _pixels(tmp_path / "fresh.png"))


def test_a_reused_confusion_matrix_shows_only_its_own_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 90, (2, 10, 10))
    classes = [f"c{i}" for i in range(10)]
    _fresh()
    plots.confusion_matrix(first, classes, tmp_path / "first.png")
    plots.confusion_matrix(second, classes, tmp_path / "reused.png", split="val")
    _fresh()
    plots.confusion_matrix(second, classes, tmp_path / "fresh.png", split="val")
    assert np.array_equal(_pixels(tmp_path / "reused.png"), _pixels(tmp_path / "fresh.png"))
    # other class names get a figure of their own (their tick labels differ)
    plots.confusion_matrix(second, [f"class {i}" for i in range(10)], tmp_path / "named.png", split="val")
    assert _pixels(tmp_path / "named.png").shape == _pixels(tmp_path / "fresh.png").shape
    assert not np.array_equal(_pixels(tmp_path / "named.png"), _pixels(tmp_path / "fresh.png"))


def test_a_confusion_matrix_painted_over_its_background_is_the_whole_figure_drawn(tmp_path: Path) -> None:
    # Each run repaints only its own artists over a saved background (blitting); what it writes must be
    # what matplotlib draws for the whole figure (the frame over the image's edges, texts on top).
    rng = np.random.default_rng(2)
    matrix = rng.integers(0, 90, (10, 10))
    classes = [f"c{i}" for i in range(10)]
    _fresh()
    plots.confusion_matrix(matrix, classes, tmp_path / "painted.png")
    kept = plots._confusions[tuple(classes)]
    for artist in kept.own:
        artist.set_animated(False)
    kept.fig.savefig(tmp_path / "whole.png", dpi=100)
    assert np.array_equal(_pixels(tmp_path / "painted.png"), _pixels(tmp_path / "whole.png"))
    _fresh()


@pytest.mark.parametrize("n_threads", [4])
def test_threads_drawing_at_once_each_get_their_own_figure_content(tmp_path: Path, n_threads: int) -> None:
    # Members' runs may end on several threads; the shared figures are drawn one at a time.
    _fresh()
    histories = [_history(5 + 3 * i, True, 1.0 + i) for i in range(n_threads)]
    for i, h in enumerate(histories):
        plots.learning_curves(h, tmp_path / f"alone{i}.png")

    def draw(i: int) -> None:
        for _ in range(3):
            plots.learning_curves(histories[i], tmp_path / f"thread{i}.png")

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(n_threads):
        assert np.array_equal(_pixels(tmp_path / f"thread{i}.png"), _pixels(tmp_path / f"alone{i}.png"))


def test_figures_drawn_in_the_background_are_all_logged_when_the_block_ends(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow import MlflowClient

    from dlsuite.tracking import plot_queue
    from dlsuite.tracking import store as stores

    client = stores.client(store)
    exp = stores.experiment_id(client, "bg")
    ids = [client.create_run(exp).info.run_id for _ in range(4)]
    rng = np.random.default_rng(1)
    matrices = rng.integers(0, 90, (4, 10, 10))
    classes = [str(i) for i in range(10)]
    with plot_queue.in_background() as queue:
        for i, run_id in enumerate(ids):
            matrix = matrices[i] if i != 2 else np.zeros((3, 7))  # run 2's figure cannot be drawn
            plots.log_run_plots(client, run_id, _history(4 + i, True, 1.0), matrix, classes)
        assert queue._pool is not None  # drawn elsewhere: this process only handed the work over
    assert "could not be drawn" in caplog.text and ids[2] in caplog.text  # a failed figure does not stop the rest
    c = MlflowClient(store)
    for i, run_id in enumerate(ids):
        if i == 2:
            continue
        local = Path(c.download_artifacts(run_id, "plots", str(tmp_path / run_id)))
        assert sorted(p.name for p in local.iterdir()) == ["confusion_matrix.png", "learning_curves.png"]
        # the helper's figure is the one this process draws
        plots.learning_curves(_history(4 + i, True, 1.0), tmp_path / "inline.png")
        assert np.array_equal(_pixels(local / "learning_curves.png"), _pixels(tmp_path / "inline.png"))
    assert plot_queue.active() is None


def test_at_the_end_this_process_draws_some_of_the_figures_the_helper_has_not_started(
    store: str, tmp_path: Path
) -> None:
    # A population's last members hand over their figures at once; the helper holds one job at a time,
    # so the newest still wait when the block ends, and this process draws some of them meanwhile.
    from mlflow import MlflowClient

    from dlsuite.tracking import plot_queue
    from dlsuite.tracking import store as stores

    client = stores.client(store)
    exp = stores.experiment_id(client, "share")
    ids = [client.create_run(exp).info.run_id for _ in range(6)]
    matrix = np.random.default_rng(3).integers(0, 90, (10, 10))
    with plot_queue.in_background(start=True) as queue:
        for i, run_id in enumerate(ids):
            plots.log_run_plots(client, run_id, _history(4 + i, True, 1.0), matrix, [str(k) for k in range(10)])
    assert queue.drawn_here >= 1
    c = MlflowClient(store)
    for i, run_id in enumerate(ids):  # every run has both figures, wherever they were drawn
        local = Path(c.download_artifacts(run_id, "plots", str(tmp_path / run_id)))
        assert sorted(p.name for p in local.iterdir()) == ["confusion_matrix.png", "learning_curves.png"]
        plots.learning_curves(_history(4 + i, True, 1.0), tmp_path / "inline.png")
        assert np.array_equal(_pixels(local / "learning_curves.png"), _pixels(tmp_path / "inline.png"))


def test_a_started_queue_has_its_helper_running_before_the_first_figure() -> None:
    # A study starts the helper with its first trial, so that its second of start-up is not spent
    # while the first trials' figures wait.
    from dlsuite.tracking import plot_queue

    with plot_queue.in_background(start=True) as queue:
        assert queue._pool is not None
        assert queue._pool.submit(int, "7").result(timeout=60) == 7
    with plot_queue.in_background() as queue:
        assert queue._pool is None  # nothing to draw, nothing started


def test_a_script_that_runs_a_study_unguarded_runs_it_once(store: str, tmp_path: Path, data_cache: Path) -> None:
    """The figure helper is spawned; spawn imports the caller's ``__main__`` again in the child unless
    dlsuite keeps it out, and a script without ``if __name__ == "__main__"`` would run its study again."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    from tests.conftest import REPO
    from tests.test_studies import SEARCH, write_study

    study = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 2"), name="unguarded")
    script = tmp_path / "script.py"
    script.write_text(
        "from pathlib import Path\n"
        f"with open({str(tmp_path / 'ran.txt')!r}, 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "from dlsuite.hpo.spec import load_study_spec\n"
        "from dlsuite.hpo.study import run_study\n"
        f"run_study(load_study_spec(Path({str(study)!r}), ['tracking.plots=true']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store, "DLSUITE_DATA": str(data_cache)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "ran.txt").read_text() == "ran\n"  # the helper did not run the script again
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("unguarded").experiment_id])
    trials = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(trials) == 2
    for r in trials:  # and the helper drew every trial's figures
        assert {a.path for a in c.list_artifacts(r.info.run_id, "plots")} == {
            "plots/confusion_matrix.png",
            "plots/learning_curves.png",
        }
