"""Every bad input gets exit code 2, one line naming the key, no traceback, and nothing written.

The cases are generated from the config schema itself (every leaf key of ``RunConfig`` and every
dataset's ``data.args``), so a key added later is covered without editing this file: the generator
refuses an annotation it does not know how to break.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import torch
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dlsuite.cli import main
from dlsuite.config import RunConfig
from dlsuite.data.args import DATASET_ARGS
from tests.conftest import REPO, cli_env, run_cli

BASE = REPO / "configs" / "mnist1d_cnn.yaml"
# Keys whose value is a name looked up in a registry or a declared list.
NAMES = {
    "data.name",
    "model.name",
    "model.init",
    "task.name",
    "task.loss",
    "optim.name",
    "optim.schedule.name",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.checkpoint_monitor",
    "regularization.early_stopping.monitor",
}
# Free-form keys whose only wrong value is the wrong type: any mapping / string is a value.
FREE = {"data.args", "task.loss_args", "optim.args", "tracking.tags"}


def _bounds(info: FieldInfo) -> list[Any]:
    """Values just outside the field's declared range."""
    out: list[Any] = []
    for m in info.metadata:
        if isinstance(m, at.Ge):
            out.append(m.ge - 1)
        elif isinstance(m, at.Gt):
            out.append(m.gt)
        elif isinstance(m, at.Le):
            out.append(m.le + 1)
        elif isinstance(m, at.Lt):
            out.append(m.lt)
    return out


def _strip_optional(ann: Any) -> Any:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else ann
    return ann


def bad_values(key: str, info: FieldInfo) -> list[Any]:
    """Values of the wrong type, out of range, empty, or unknown, for one leaf key."""
    ann = _strip_optional(info.annotation)
    origin = typing.get_origin(ann)
    if key in NAMES:
        return ["no_such_name"]
    if key == "data.root":
        return ["__A_FILE__"]
    if ann is bool:
        return ["maybe"]
    if ann in (int, float):
        return ["not_a_number", *_bounds(info)]
    if ann is str:
        return [""]
    if origin is typing.Literal:
        return ["no_such_choice"]
    if origin in (list, tuple, dict) or ann in (list, tuple, dict) or key in FREE:
        return ["not_a_collection"]
    if typing.get_origin(ann) in (typing.Union, types.UnionType):  # trainer.devices: int | str | list
        return ["not_a_device", 0]
    raise AssertionError(f"the bad-input generator does not know how to break {key} ({info.annotation})")


def leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of a config model (sub-sections, optional ones included, are walked)."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _strip_optional(info.annotation)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if typing.get_origin(info.annotation) in (typing.Union, types.UnionType):
                yield key, FieldInfo(annotation=dict)  # an optional section given the wrong type
            yield from leaves(sub, key + ".")
        else:
            yield key, info


def _section_enabling(key: str) -> list[str]:
    # Keys inside an optional section only exist once it is switched on.
    for section in ("early_stopping", "swa", "ema", "ensemble"):
        if f"regularization.{section}." in key:
            return [f"regularization.{section}={{}}"]
    return []


def run_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for key, info in leaves(RunConfig):
        if key == "data.augment":
            cases.append((key, ["data.augment=[{name: no_such_augmentation}]"]))
        for value in bad_values(key, info):
            cases.append((key, [*_section_enabling(key), f"{key}={_yaml(value)}"]))
    for dataset, args_model in DATASET_ARGS.items():
        for arg, info in args_model.model_fields.items():
            for value in bad_values(f"data.args.{arg}", info):
                sets = [f"data.name={dataset}", "data.args={}", f"data.args.{arg}={_yaml(value)}"]
                cases.append((f"data.args.{arg}", sets))
        cases.append(("data.args.no_such_arg", [f"data.name={dataset}", "data.args={}", "data.args.no_such_arg=1"]))
    return cases


def _yaml(value: Any) -> str:
    return "''" if value == "" else str(value)


CASES = run_cases()


def test_every_leaf_key_is_covered() -> None:
    keys = {k for k, _ in CASES}
    assert {k for k, _ in leaves(RunConfig)} <= keys
    assert len(CASES) > 150


@pytest.mark.parametrize(("key", "sets"), CASES, ids=[" ".join(s) for _, s in CASES])
def test_bad_value_exits_2_with_one_line_and_writes_nothing(
    key: str, sets: list[str], store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    sets = [s.replace("__A_FILE__", str(a_file)) for s in sets]
    rc = main(["train", str(BASE), "--set", "trainer.max_epochs=1", "data.train_samples=50", *sets])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("dlsuite: error:"), err
    assert key in err or "no_such" in err, f"the message should name {key} or the bad value: {err}"
    assert not (tmp_path / "mlruns").exists(), "a refused config wrote to the store"


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02binary", "is a binary file"),
        ("data:\n  name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
        (b"- just\n- a list\n", "top level must be a mapping"),
    ],
    ids=["empty", "binary", "latin-1", "list"],
)
def test_bad_config_files_are_refused_by_the_real_cli(
    content: bytes, message: str, store: str, tmp_path: Path, data_cache: Path
) -> None:
    path = _write(tmp_path, "bad.yaml", content)
    proc = run_cli(["train", str(path)], cli_env(store, data_cache), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlruns").exists()


def test_named_cases_from_the_new_user_corpus(store: str, tmp_path: Path, data_cache: Path) -> None:
    # the cases that once ran, wrote or crashed, through the real CLI in one subprocess each
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    env = cli_env(store, data_cache)
    for sets, message in [
        (["seed=4294967296"], "seed"),
        (["data.args.num_samples=0"], "num_samples"),
        (["tracking.experiment=''"], "tracking.experiment"),
        ([f"data.root={a_file}"], "is a file"),
        *([] if torch.cuda.is_available() else [(["trainer.accelerator=gpu"], "no such device")]),
        (["data.args.shuffle_seq=maybe"], "shuffle_seq"),
    ]:
        proc = run_cli(["train", str(BASE), "--set", *sets], env, tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, (sets, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "mlruns").exists(), sets
