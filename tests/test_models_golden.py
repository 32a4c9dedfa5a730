"""Golden outputs: every registered zoo model, seeded, on a fixed input, gives the stored numbers.

A refactor that changes a model's construction order, initialisation or forward shows up here as a
number that moved. The file is rewritten only on request (torchvision's ``--accept`` idea):
``pytest tests/test_models_golden.py --accept-golden`` or ``DLSUITE_ACCEPT_GOLDEN=1``; review the diff
of ``tests/golden/models.json`` before committing it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from dlsuite.models import MODELS, create_model, list_models, model_inputs

GOLDEN = Path(__file__).parent / "golden" / "models.json"
NUM_CLASSES = 5
SHAPES = {"1d": (2, 16), "2d": (2, 12, 12), "tokens": (6,)}
ZOO = [n for n in list_models() if MODELS.get(n).__module__.startswith("dlsuite.models.")]
# Non-default knobs, so that the renamed knobs and the less common paths are pinned too
# (key: "model/form/variant"; the numbers must not move when only a knob's name changes).
VARIANTS: dict[str, dict[str, Any]] = {
    "cnn": {"width": 8, "norm": "batch", "head": "gap", "pool": "max", "stride": 1},
    "mlp": {"shortcut": True, "depth": 3, "width": 16, "norm": "layer"},
    "densenet": {"stages": 2, "depth": 2, "growth_rate": 4},
    "gru": {"width": 6, "bidirectional": True, "head": "flatten"},
    "lstm": {"width": 8, "depth": 2, "head": "gap"},
    "rnn": {"width": 8, "activation": "relu"},
    "attention_seq2seq": {"width": 16, "embed": 8, "attention": "dot"},
    "resnet": {"block": "bottleneck", "shortcut": False, "width": 4},
    "vgg": {"hidden": 16, "width": 4},
    "lenet": {"hidden": 30, "width": 4, "activation": "relu", "pool": "max"},
}
CASES = [f"{name}/{form}" for name in ZOO for form in model_inputs(name)]
CASES += [f"{name}/{model_inputs(name)[0]}/variant" for name in VARIANTS]


def _accepting(config: pytest.Config) -> bool:
    return bool(config.getoption("--accept-golden")) or os.environ.get("DLSUITE_ACCEPT_GOLDEN") == "1"


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def fingerprint(name: str, form: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """Seeded build, evaluation-mode forward on a seeded input: a few numbers."""
    torch.manual_seed(0)
    model = create_model(name, SHAPES[form], NUM_CLASSES, **knobs).eval()
    gen = torch.Generator().manual_seed(1)
    if form == "tokens":
        x = torch.randint(0, NUM_CLASSES, (3, *SHAPES[form]), generator=gen)
    else:
        x = torch.randn(3, *SHAPES[form], generator=gen)
    with torch.no_grad():
        out = model(x)
    y = (out[0] if isinstance(out, tuple) else out).double()
    return {
        "shape": list(y.shape),
        "params": sum(p.numel() for p in model.parameters()),
        "sum": _round(y.sum().item()),
        "mean_abs": _round(y.abs().mean().item()),
        "first": [_round(v) for v in y.flatten()[:5].tolist()],
    }


@pytest.fixture(scope="module")
def golden(request: pytest.FixtureRequest) -> dict[str, Any]:
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    yield stored
    if _accepting(request.config):
        GOLDEN.parent.mkdir(exist_ok=True)
        rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(stored.items()) if k in CASES]
        GOLDEN.write_text("{\n" + ",\n".join(rows) + "\n}\n")  # one line per case: reviewable diffs


def _close(a: float, b: float) -> bool:
    # Summaries of float32 forwards: BLAS and thread counts move the last digits, nothing more.
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_golden_output(case: str, golden: dict[str, Any], request: pytest.FixtureRequest) -> None:
    name, form, *variant = case.split("/")
    got = fingerprint(name, form, VARIANTS[name] if variant else {})
    if _accepting(request.config):
        golden[case] = got
        return
    assert case in golden, f"no golden output for {case}: run pytest {__file__} --accept-golden and review the diff"
    want = golden[case]
    assert got["shape"] == want["shape"] and got["params"] == want["params"], (got, want)
    pairs = [(got["sum"], want["sum"]), (got["mean_abs"], want["mean_abs"]), *zip(got["first"], want["first"])]
    assert all(_close(a, b) for a, b in pairs), f"{case} moved: got {got}, stored {want}"


def test_golden_file_has_no_stale_entries(request: pytest.FixtureRequest) -> None:
    if _accepting(request.config):
        pytest.skip("accepting: the file is being rewritten")
    stored = json.loads(GOLDEN.read_text())
    assert sorted(stored) == sorted(CASES), "models were added or removed: regenerate with --accept-golden"
