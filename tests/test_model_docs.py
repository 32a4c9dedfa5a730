"""docs/models.md shows the registry as it is: the knob vocabulary (meaning, type, range, families)
and every model's knobs with their defaults. On a mismatch the message holds the tables to paste."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from dlsuite.models import MODELS, list_models, model_inputs
from dlsuite.models.api import Preset, knob_specs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"
ZOO = [n for n in list_models() if MODELS.get(n).__module__.startswith("dlsuite.models.")]
FAMILIES = [n for n in ZOO if not isinstance(MODELS.get(n), Preset)]


def _v(value: object) -> str:
    return str(value)


def vocabulary_table() -> str:
    """One row per knob name: meaning, type, range (per family where it differs), families."""
    by_knob: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    meaning: dict[str, tuple[str, str]] = {}
    for name in FAMILIES:
        for knob, spec in knob_specs(name).items():
            assert spec.knob is not None and spec.kind is not None
            by_knob[knob]["true, false" if spec.kind is bool else spec.knob.allowed()].append(name)
            meaning[knob] = (spec.knob.meaning, spec.kind.__name__)
    rows = ["| knob | meaning | type | range | families |", "|---|---|---|---|---|"]
    for knob in sorted(by_knob, key=lambda k: (-sum(map(len, by_knob[k].values())), k)):
        ranges = by_knob[knob]
        families = sorted(n for names in ranges.values() for n in names)
        if len(ranges) == 1:
            allowed = next(iter(ranges))
        else:  # the most common range first, the others with the families they apply to
            common, *others = sorted(ranges, key=lambda r: -len(ranges[r]))
            allowed = common + "".join(f"; {', '.join(ranges[r])}: {r}" for r in others)
        text, kind = meaning[knob]
        rows.append(f"| `{knob}` | {text} | {kind} | {allowed} | {', '.join(families)} |")
    return "\n".join(rows)


def models_table() -> str:
    """One row per registered model: input forms and knobs with defaults (a preset: its base and values)."""
    rows = ["| model | forms | knobs (defaults) |", "|---|---|---|"]
    for name in ZOO:
        entry = MODELS.get(name)
        if isinstance(entry, Preset):
            knobs = f"preset of `{entry.base}`: " + ", ".join(f"`{k}={_v(v)}`" for k, v in entry.knobs.items())
        else:
            knobs = ", ".join(f"`{k}={_v(s.default)}`" for k, s in knob_specs(name).items())
        rows.append(f"| `{name}` | {', '.join(model_inputs(name))} | {knobs} |")
    return "\n".join(rows)


def test_docs_list_the_knob_vocabulary() -> None:
    table = vocabulary_table()
    assert table in DOCS.read_text(), f"docs/models.md: replace the knob table with\n{table}"


def test_docs_list_every_model_with_its_knobs() -> None:
    table = models_table()
    assert table in DOCS.read_text(), f"docs/models.md: replace the model table with\n{table}"


def test_docs_list_every_renamed_knob() -> None:
    from dlsuite.models.knobs import RENAMED

    text = DOCS.read_text()
    for (family, old), new in RENAMED.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{old}` | `{new}` |"))
        assert f"`{family}`" in row, f"docs/models.md: add {family} to the rename {old} -> {new}"
