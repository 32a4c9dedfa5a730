"""The study file: a base run config, a search space (or compare variants), objectives, sampler, pruner, budget.

Two study types share one schema and one machinery (storage, workers, crash recovery, MLflow):

- ``type: search`` (default): Optuna samples the ``space`` (config keys -> distributions).
- ``type: compare``: every (variant, seed) pair is one fixed trial, for statistics over seeds.

Everything is validated before any trial runs: each searched key is applied to the base config at its
bounds and choices, so an unknown key or a value the config refuses is reported up front, and each
objective metric must be one a run of the study produces.

A search selects hyperparameters, so it optimises a validation metric (default ``best_val_acc``): a
test metric as a search objective is refused unless the file says ``select_on_test: true``, since the
best trial's test accuracy would then be an optimistic estimate. Compare studies select nothing and
compare their variants on test metrics (default ``test_acc``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlsuite import yamlio
from dlsuite.config import RunConfig, apply_overrides, build_config, set_dotted
from dlsuite.errors import ConfigError, did_you_mean
from dlsuite.paths import safe_segment

Direction = Literal["maximize", "minimize"]
RUN_SECTIONS = ("data", "model", "task", "optim", "regularization", "trainer", "tracking")
SEARCH_METRIC = "best_val_acc"  # default objective of a search (validation data)
COMPARE_METRIC = "test_acc"  # default metric a compare study reports (it selects nothing)
VALIDATION_METRICS = "best_val_acc (maximize), best_val_loss or final_val_loss (minimize)"


def is_test_metric(metric: str) -> bool:
    """Whether ``metric`` is measured on test data (``test_acc``, ``ensemble_test_acc``, ``cv_test_acc_mean``...)."""
    return "test" in metric.split("_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One searched config key: ``float`` (optionally ``log``), ``int`` (``step`` or ``log``) or ``categorical``."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    """Grid step (``int``: default 1; ``float``: none)."""
    log: bool = False
    """Sample on a log scale (needs ``low > 0``)."""
    choices: list[Any] | None = None
    """Values of a ``categorical``."""
    grid: list[Any] | None = None
    """Values the ``grid`` sampler visits for a ``float`` (ints and categoricals are enumerated)."""
    when: dict[str, list[Any]] | None = None
    """Only search this key when each named param takes one of the listed values (e.g. momentum only for sgd)."""

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("a categorical takes 'choices' only (no low/high/step/log)")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' is for categoricals; a {self.type} takes low/high")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log' do not combine")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        if self.type == "int":
            for k in ("low", "high", "step"):
                v = getattr(self, k)
                if v is not None and v != int(v):
                    raise ValueError(f"an int's {k} must be a whole number (got {v})")
        return self

    def grid_values(self, key: str) -> list[Any]:
        """The values the grid sampler visits."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.grid is not None:
            return list(self.grid)
        assert self.low is not None and self.high is not None
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        raise ConfigError(f"the grid sampler needs 'grid: [values]' for {key!r} (a {'log ' * self.log}{self.type})")

    def probe_values(self) -> list[Any]:
        """Values that exercise the config's validation: bounds and every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        vals = [self.low, self.high, *(self.grid or [])]
        return [int(v) for v in vals] if self.type == "int" else vals  # type: ignore[arg-type]


class ObjectiveSpec(_Strict):
    """A metric of the run's summary (``test_acc``, ``best_val_acc``, ``num_params``...) and its direction."""

    metric: str
    direction: Direction = "maximize"


class _Named(BaseModel):
    """A registry name plus options as further keys."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for the class, i.e. every key but ``name`` (and ``monitor``)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k != "monitor"}


class SamplerSpec(_Named):
    """``sampler: tpe`` or ``sampler: {name: tpe, n_startup_trials: 5}``."""

    name: str = "tpe"


class PrunerSpec(_Named):
    """``pruner: median`` or ``pruner: {name: median, n_warmup_steps: 2, monitor: val_acc}``."""

    name: str = "none"
    monitor: str | None = None
    """Validation metric reported each epoch (default ``val_acc`` to maximise, ``val_loss`` to minimise)."""


class StudySpec(_Strict):
    """A validated study file."""

    name: str
    """Study name: the Optuna study and, unless ``experiment`` says otherwise, the MLflow experiment."""
    type: Literal["search", "compare"] = "search"
    base: dict[str, Any] = Field(default_factory=dict)
    """The base run config, inline or (in the file) a path relative to the study file."""
    overrides: list[str] = Field(default_factory=list)
    """``key=value`` overrides of the base config, applied to every trial."""
    space: dict[str, ParamSpec] = Field(default_factory=dict)
    """``search``: config key -> distribution."""
    variants: dict[str, list[str]] = Field(default_factory=dict)
    """``compare``: variant name -> ``key=value`` overrides."""
    sets: list[str] = Field(default_factory=list)
    """Run keys given with ``--set`` on the command line: applied after the variants' overrides, so
    ``--set trainer.max_epochs=1`` holds for a variant that sets its own epochs (not a study file key)."""
    tune: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """``compare``: variant name -> its own small search run before its seeds
    (``{space: {...}, n_trials: 8, metric: best_val_acc}``), so each remedy is compared at a good strength."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    """``compare``: the run seeds every variant is trained with."""
    metric: str | None = None
    direction: Direction = "maximize"
    objectives: list[ObjectiveSpec] = Field(default_factory=list)
    """Several objectives (Pareto front), e.g. ``test_acc`` up and ``num_params`` down."""
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: int | None = Field(None, ge=1)
    """Finished trials to reach (a resumed study only adds the missing ones); compare: one per pair."""
    timeout: float | None = Field(None, gt=0)
    """Seconds after which no new trial starts."""
    seed: int | None = 0
    """Sampler seed (worker ``i`` uses ``seed + i``); ``null`` for a random one."""
    storage: str | None = None
    """Optuna storage: a journal file path or an RDB URL; default ``$DLSUITE_STUDY_STORAGE`` or
    ``mlruns/optuna/journal.log``."""
    experiment: str | None = None
    """MLflow experiment of the parent and trial runs (default: the study name)."""
    population: int = Field(1, ge=1)
    """Train up to this many trials at once as populations (``--population``; docs/studies.md,
    "Populations"): a worker asks Optuna for up to this many trials, and those that share their structure
    train as one vectorised model; the others run one by one. 1 (the default) runs every trial alone."""
    select_on_test: bool = False
    """``search``: allow a test metric as objective. Off by default: hyperparameters chosen on the test set
    make the best trial's test accuracy an optimistic estimate; select on validation data instead."""

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _name_only(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        # The study's report goes to mlruns/reports/<name>; a tuned variant's search is <name>.tune.<variant>.
        try:
            return safe_segment(v, "study name")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("variants")
    @classmethod
    def _variants_are_folder_names(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        try:
            for variant in v:
                safe_segment(variant, "variant name")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("space", mode="before")
    @classmethod
    def _list_is_categorical(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"type": "categorical", "choices": p} if isinstance(p, list) else p for k, p in v.items()}
        return v

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if self.metric is not None and self.objectives:
            raise ValueError("give either 'metric'/'direction' or 'objectives', not both")
        if not self.objectives:
            default = SEARCH_METRIC if self.type == "search" else COMPARE_METRIC
            self.objectives = [ObjectiveSpec(metric=self.metric or default, direction=self.direction)]
        self.metric = None  # normalised into objectives (so the spec round-trips through JSON to workers)
        if self.type == "search":
            if not self.space:
                raise ValueError("a search study needs a 'space' (config key -> distribution)")
            if self.variants or self.tune:
                raise ValueError("'variants' and 'tune' belong to type: compare")
            if self.n_trials is None and self.timeout is None and self.sampler.name != "grid":
                raise ValueError("set a budget: n_trials and/or timeout")
            on_test = [o.metric for o in self.objectives if is_test_metric(o.metric)]
            if on_test and not self.select_on_test:
                raise ValueError(
                    f"a search selects hyperparameters on its objective, and {', '.join(on_test)} is measured on "
                    "the test set, which makes the best trial's test accuracy an optimistic estimate; select on "
                    f"validation data: {VALIDATION_METRICS} (the report still shows the test metrics), "
                    "or set select_on_test: true to do it anyway"
                )
        else:
            if not self.variants:
                raise ValueError("a compare study needs 'variants' (name -> list of key=value)")
            if self.space:
                raise ValueError("'space' belongs to type: search")
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError("'seeds' must be a non-empty list of distinct ints")
            if len(self.objectives) != 1:
                raise ValueError("a compare study has one metric")
            if self.select_on_test:
                raise ValueError("'select_on_test' belongs to type: search (a compare study selects nothing)")
            unknown = set(self.tune) - set(self.variants)
            if unknown:
                raise ValueError(f"'tune' names no variant: {sorted(unknown)}; variants: {list(self.variants)}")
            self.n_trials = len(self.variants) * len(self.seeds)
            self.sampler = SamplerSpec(name="random")
        if len(self.objectives) > 1 and self.pruner.name != "none":
            raise ValueError("pruning needs a single objective (Optuna cannot prune multi-objective trials)")
        return self

    # -- derived ------------------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        """Optuna directions, one per objective."""
        return [o.direction for o in self.objectives]

    @property
    def prune_monitor(self) -> str:
        """The per-epoch validation metric the pruner sees."""
        if self.pruner.monitor:
            return self.pruner.monitor
        return "val_acc" if self.objectives[0].direction == "maximize" else "val_loss"

    @property
    def mlflow_experiment(self) -> str:
        """MLflow experiment for the parent and trial runs."""
        return self.experiment or self.name

    def pairs(self) -> list[tuple[str, int]]:
        """``compare``: every (variant, seed) pair, in order."""
        return [(v, s) for v in self.variants for s in self.seeds]

    def run_config(self, params: dict[str, Any] | None = None, variant: str | None = None) -> RunConfig:
        """The run config of one trial: base, study overrides, variant overrides, ``--set`` run keys, then
        the trial's params."""
        data = apply_overrides(self.base, self.overrides)
        if variant is not None:
            data = apply_overrides(data, self.variants[variant])
        data = apply_overrides(data, self.sets)
        for key, value in (params or {}).items():
            set_dotted(data, key, value)
        data.setdefault("name", self.name)
        tracking = data.setdefault("tracking", {})
        if isinstance(tracking, dict):
            tracking["experiment"] = self.mlflow_experiment
            diagnostics = tracking.setdefault("diagnostics", {})
            if isinstance(diagnostics, dict):
                # Per-trial diagnostics PNGs took most of a small trial's fixed cost; the numbers are
                # still logged every epoch. A base config or override that sets the key is obeyed.
                diagnostics.setdefault("plots", False)
            # An MLflow logged model costs a pickle, an upload and a few store writes per trial (see
            # tracking/model.py); a study's best run can be retrained with it on. Obeyed when set.
            tracking.setdefault("log_model", False)
        trainer = data.setdefault("trainer", {})
        if isinstance(trainer, dict):
            trainer["progress_bar"] = False  # parallel workers would interleave bars
            if trainer.get("devices", "auto") == "auto":
                trainer["devices"] = 1  # "auto" would take every visible GPU (DDP); a trial uses one
        from dlsuite.build import validate as validate_run

        source = f"(study {self.name}{f', variant {variant}' if variant else ''})"
        return validate_run(build_config(data, source), source)

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space."""
        return {k: p.grid_values(k) for k, p in self.space.items()}


def _check_devices(cfg: RunConfig, where: str) -> None:
    from dlsuite.hpo.ddp import check_trial_devices

    why = check_trial_devices(cfg)
    if why:
        raise ConfigError(f"{where}: {why}")


def _check_objectives(spec: StudySpec, base: RunConfig) -> None:
    """Refuse an objective metric that a run of the study does not produce (every variant's, for compare)."""
    from dlsuite.runner.summary import summary_names

    configs = {"": base} if spec.type == "search" else {v: spec.run_config(variant=v) for v in spec.variants}
    for where, cfg in configs.items():
        names = summary_names(cfg)
        for o in spec.objectives:
            if o.metric not in names:
                whose = f"variant {where!r}" if where else f"study {spec.name}"
                hint = VALIDATION_METRICS if spec.type == "search" else "test_acc, test_loss, best_val_acc, ..."
                raise ConfigError(
                    f"objective metric {o.metric!r} is not produced by a run of {whose}"
                    f"{did_you_mean(o.metric, names)}; e.g. {hint}; all: {', '.join(sorted(names))}"
                )


def validate(spec: StudySpec) -> None:
    """Check everything that can be checked before a trial runs; raise ConfigError naming the problem."""
    from dlsuite.hpo.samplers import check_pruner, check_sampler

    base = spec.run_config()
    _check_devices(base, f"study {spec.name}")
    _check_objectives(spec, base)
    check_sampler(spec.sampler.name, spec.sampler.options, len(spec.objectives))
    check_pruner(spec.pruner.name, spec.pruner.options)
    if spec.pruner.name != "none" and base.data.val_fraction == 0 and not base.data.args.get("val_samples"):
        raise ConfigError("pruning needs a validation split (data.val_fraction > 0 or data.args.val_samples)")
    if spec.type == "compare":
        for variant in spec.variants:
            _check_devices(spec.run_config(variant=variant), f"variant {variant!r}")
        from pydantic import ValidationError

        from dlsuite.hpo.tuning import TuneSpec, tune_spec

        for variant, raw in spec.tune.items():  # a variant's own search is refused up front like any space
            try:
                validate(tune_spec(spec, variant, TuneSpec.model_validate(raw)))
            except ValidationError as exc:
                raise ConfigError(f"tune.{variant}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        return
    if spec.sampler.name == "grid":
        spec.grid()
    for key, p in spec.space.items():
        if key.split(".")[0] not in (*RUN_SECTIONS, "seed"):
            raise ConfigError(
                f"search space key {key!r} is not a run config key{did_you_mean(key.split('.')[0], RUN_SECTIONS)}; "
                f"keys start with one of: {', '.join((*RUN_SECTIONS, 'seed'))}"
            )
        if p.type == "categorical" and not all(
            isinstance(c, (str, int, float, bool)) or c is None for c in p.choices or []
        ):
            raise ConfigError(f"choices of {key!r} must be plain values (str, int, float, bool, null)")
        for cond in p.when or {}:
            if cond not in spec.space or list(spec.space).index(cond) >= list(spec.space).index(key):
                raise ConfigError(
                    f"'when' of {key!r} names {cond!r}, which must be a search space key listed before it"
                )
        fixed = {c: vals[0] for c, vals in (p.when or {}).items()}
        for value in p.probe_values():
            try:
                spec.run_config({**fixed, key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space key {key!r} = {value!r} is refused: {exc}") from None


def load_study_spec(path: str | Path, sets: list[str] | None = None) -> StudySpec:
    """Read a study file, resolve its base config, apply ``--set`` overrides, validate.

    ``--set`` keys whose first part is a run config section (``trainer.max_epochs=1``), or that start
    with ``run.``, go to :attr:`StudySpec.sets` (applied after every override of the file, variants
    included); the others set study keys (``n_trials=3``).
    """
    p = Path(path)
    data = yamlio.load(p, "study file")
    if not isinstance(data, dict):
        raise ConfigError(f"invalid study file {p}: the top level must be a mapping")
    data.setdefault("name", p.stem)
    if "sets" in data:
        raise ConfigError(f"invalid study file {p}: 'sets' is the command line's (--set); use 'overrides'")
    run_sets: list[str] = []
    study_sets: list[str] = []
    for item in sets or []:
        key = item.partition("=")[0].strip()
        if key.startswith("run."):
            run_sets.append(item.strip()[len("run.") :])
        elif key.split(".")[0] in RUN_SECTIONS:
            run_sets.append(item)
        else:
            study_sets.append(item)
    data = apply_overrides(data, study_sets)
    base = data.get("base", {})
    if isinstance(base, str):
        base_path = (p.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise ConfigError(f"study {p}: base config not found: {base_path}")
        loaded = yamlio.load(base_path)
        base = loaded if isinstance(loaded, dict) else {}
        base.pop("name", None)
    data["base"] = base
    data["sets"] = run_sets
    spec = build_study_spec(data, str(p))
    validate(spec)
    return spec


def build_study_spec(data: dict[str, Any], source: str = "") -> StudySpec:
    """Validate plain data into a :class:`StudySpec` (ConfigError with one line per problem)."""
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key{did_you_mean(str(err['loc'][-1]), StudySpec.model_fields)}"
            lines.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigError(f"invalid study {source}: " + "; ".join(lines)) from None
