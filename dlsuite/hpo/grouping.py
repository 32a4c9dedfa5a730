"""Which trials of a study can train together: the light part of ``study run --population`` (``--check``).

Importing it costs no torch, Lightning or Optuna (``tests/test_build.py``): ``study run --check`` prints
:func:`check_lines`; :mod:`dlsuite.hpo.batch` asks and trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlsuite.errors import DlsuiteError
from dlsuite.hpo.spec import StudySpec

if TYPE_CHECKING:
    import optuna


def variant_key(spec: StudySpec, study: optuna.Study | None, variant: str) -> str | None:
    """The structure a compare variant's trials share, or None when they cannot join a population."""
    from dlsuite.hpo.tuning import tuned_params
    from dlsuite.population.group import structure_key, why_not

    tuned = tuned_params(study, variant) if study is not None else {}
    try:
        cfg = spec.run_config({"seed": spec.seeds[0], **tuned}, variant=variant)
    except DlsuiteError:
        return None
    return structure_key(cfg) if why_not(cfg) is None else None


def order_pairs(spec: StudySpec, pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``pairs`` with same-structure variants next to each other (first seen first), those that train
    alone last, so that a batch asked from the queue is one population."""
    if spec.population == 1:
        return pairs
    keys = {v: variant_key(spec, None, v) for v in dict.fromkeys(v for v, _ in pairs)}
    first: dict[str | None, int] = {}
    for v in keys:
        first.setdefault(keys[v], len(first))
    return sorted(pairs, key=lambda p: (keys[p[0]] is None, first[keys[p[0]]]))  # stable: seeds stay in order


def alone_whatever_sampled(spec: StudySpec) -> bool:
    """Whether every trial of a search trains alone: the base config cannot join a population and no
    searched key changes that (each searched key varies per member)."""
    from dlsuite.population.group import varies_per_member, why_not

    try:
        base = spec.run_config()
    except DlsuiteError:
        return False
    return why_not(base) is not None and all(varies_per_member(k) for k in spec.space)


def check_lines(spec: StudySpec) -> list[str]:
    """What ``study run --check`` says about runners: which trials train as populations, which alone, why."""
    from dlsuite.population.group import plan, varies_per_member, why_not

    p = spec.population
    if p == 1:
        return ["runner: sequential, one trial at a time (population: 1; --population P trains alike trials together)"]
    if spec.type == "compare":
        pairs = order_pairs(spec, spec.pairs())
        cfgs = [spec.run_config({"seed": s}, variant=v) for v, s in pairs]
        lines = [f"runner: population (up to {p} trials at once); tuned values may regroup variants"]
        alone: dict[str, list[str]] = {}  # variant -> the reasons its trials train alone
        for group in plan(cfgs, max_size=p):
            names = list(dict.fromkeys(pairs[i][0] for i in group.members))
            if group.runner == "population":
                lines.append(f"  population: {', '.join(names)} ({len(group.members)} trials trained together)")
            else:
                alone.setdefault(names[0], []).append(group.reason)
        for variant, reasons in alone.items():
            n = len(reasons)
            lines.append(f"  sequential: {variant} ({n} trial{'s' * (n > 1)}, one at a time: {reasons[0]})")
        return lines
    base = spec.run_config()
    reason = why_not(base)
    if reason is not None and not spec.space:
        return [f"runner: sequential for every trial ({reason})"]
    lines = [f"runner: population (up to {p} trials asked at once; those sharing their structure train together)"]
    per_member = [k for k in spec.space if varies_per_member(k)]
    shaping = [k for k in spec.space if not varies_per_member(k)]
    if per_member:
        lines.append(f"  varies within a population: {', '.join(per_member)}")
    if shaping:
        lines.append(
            f"  structure-determining (trials differing here train in separate populations): {', '.join(shaping)}"
        )
    else:
        lines.append("  no searched key changes the structure: every batch of trials is one population")
    if reason is not None:
        lines.append(f"  the base config trains alone ({reason}); searched values may change that")
    for key, param in spec.space.items():
        fixed = {c: vals[0] for c, vals in (param.when or {}).items()}
        for value in param.probe_values():
            why = why_not(spec.run_config({**fixed, key: value}))
            if why is not None:
                lines.append(f"  sequential when {key}={value}: {why}")
    return lines
