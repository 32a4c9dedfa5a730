"""Names that become folder or file names cannot leave their folder: traversal and absolute names are
refused by the CLI with exit 2, one line, and nothing written anywhere."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from dlsuite.cli import main
from dlsuite.errors import ConfigError
from dlsuite.hpo.storage import open_storage
from dlsuite.paths import safe_segment

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "configs" / "mnist1d_cnn.yaml"
STUDY = f"""base: {CNN}
space:
  optim.lr: {{type: float, low: 1e-3, high: 3e-2, log: true}}
n_trials: 1
"""
COMPARE = f"""name: cmp
type: compare
base: {CNN}
variants:
  baseline: []
  "../../../evil_variant": [optim.lr=0.01]
seeds: [0]
"""


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def work(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder three levels below the test's folder, so ``../../..`` still lands inside it."""
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    (work / "s.yaml").write_text(STUDY)
    (work / "cmp.yaml").write_text(COMPARE)
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(
    "args",
    [
        ["study", "run", "s.yaml", "--set", "name=../../../evil_study"],
        ["study", "run", "s.yaml", "--set", "name=/tmp/evil_study"],
        ["study", "run", "s.yaml", "--set", "name=.."],
        ["study", "run", "s.yaml", "--set", "name=evil\\study"],
        ["study", "run", "s.yaml", "--check", "--set", "name=../../../evil_study"],
        ["study", "run", "cmp.yaml"],
        ["study", "report", "../../../evil_study"],
        ["study", "report", "/tmp/evil_study"],
    ],
)
def test_traversal_and_absolute_names_are_refused_and_nothing_is_written(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    before = _files(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot name a file or folder" in err and "one path segment" in err
    assert _files(tmp_path) == before  # nothing inside the test's folder, so nothing above the working folder
    assert not Path("/tmp/evil_study").exists()


def test_a_stored_study_with_a_traversal_name_is_not_reported_above_the_folder(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Studies created before names were checked may carry such a name in their storage.
    storage = work / "mlruns" / "optuna" / "journal.log"
    optuna.create_study(study_name="../../../evil_study", storage=open_storage(str(storage)))
    before = _files(tmp_path)
    assert main(["study", "report", "../../../evil_study", "--no-attach"]) == 2
    assert "study name '../../../evil_study' cannot name a file or folder" in capsys.readouterr().err
    assert _files(tmp_path) == before


def test_report_of_a_missing_storage_writes_nothing(work: Path, tmp_path: Path) -> None:
    before = _files(tmp_path)
    assert main(["study", "report", "nosuch"]) == 2
    assert _files(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a/b", "separator"),
        ("a\\b", "separator"),
        ("/abs", "separator"),
        (".", "folder itself"),
        ("..", "folder itself"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("x" * 201, "longer than 200 bytes"),
        (3, "not text"),
    ],
)
def test_safe_segment_refuses_what_is_not_one_plain_segment(name: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        safe_segment(name, "study name")


@pytest.mark.parametrize("name", ["lr_search", "resnet-18.v2", "my study", "étude", "a..b", ".hidden", "x" * 200])
def test_safe_segment_keeps_plain_names(name: str) -> None:
    assert safe_segment(name, "study name") == name
