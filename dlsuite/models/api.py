"""The model registry in the spirit of timm: ``@register_model``, ``create_model``, ``list_models``.

A family registers its ``nn.Module`` class itself: ``@register_model("vgg")`` above ``class VGG``. Its
knobs are stated once, in two kinds. A knob of the shared vocabulary (:mod:`dlsuite.models.knobs`)
with the shared range is named with its default on the class line, ``class VGG(ConvClassifier,
width=16, stages=3, ...)`` (a :class:`Family`), and reaches the module as ``self.knobs.width``; a knob
only the family has, or one whose range it narrows, is a keyword argument of its ``__init__``,
annotated with its :class:`~dlsuite.models.knobs.Knob` (``lrn: Annotated[bool, Knob(...)] = False``).
A preset is a name for a registered model with some knobs set (``mnist1d_cnn``), as timm's
``resnet18`` is for ``ResNet``. A plain builder function with keyword-only knobs registers the same way
(the ``transfer`` model does). ``input_shape`` excludes the batch dimension: ``(C, L)`` for sequences,
``(C, H, W)`` for images, ``(L,)`` for tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from torch import nn

from dlsuite.errors import ConfigError, did_you_mean
from dlsuite.models.knobs import VOCABULARY, Knob, renamed
from dlsuite.registry import Registry

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("models", "architectures (plain nn.Modules)")
_POSITIONAL = ("input_shape", "num_classes")

#: Input forms a model can take: ``1d`` sequences ``(C, L)``, ``2d`` images ``(C, H, W)``, ``tokens``
#: integer sequences ``(L,)``. Tests are generated from this table (every model x every form).
INPUT_FORMS = {"1d": 2, "2d": 3, "tokens": 1}
_MODEL_INPUTS: dict[str, tuple[str, ...]] = {}

B = typing.TypeVar("B", bound=ModelBuilder)


def register_model(name: str, inputs: tuple[str, ...] = ("1d", "2d")) -> Callable[[B], B]:
    """Register a model class (or builder function) under ``name`` taking the input forms ``inputs``."""
    unknown = set(inputs) - set(INPUT_FORMS)
    if unknown:
        raise ValueError(f"unknown input forms {sorted(unknown)}; valid: {', '.join(INPUT_FORMS)}")

    def deco(builder: B) -> B:
        MODELS.add(name, builder)  # refuses a duplicate name before anything else is recorded
        _MODEL_INPUTS[name] = tuple(inputs)
        return builder

    return deco


class Preset:
    """A registered name for model ``base`` with some knobs set; knobs given at build time override them."""

    def __init__(self, name: str, base: str, doc: str, knobs: dict[str, Any]) -> None:
        self.__name__ = name
        self.__doc__ = doc
        self.__module__ = getattr(MODELS.get(base, what="model"), "__module__", __name__)
        self.base = base
        self.knobs = knobs

    def __call__(self, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> nn.Module:
        return MODELS.get(self.base)(input_shape, num_classes, **{**self.knobs, **knobs})

    def __repr__(self) -> str:
        return f"Preset({self.__name__!r} = {self.base} with {self.knobs})"


def register_preset(name: str, base: str, doc: str, **knobs: Any) -> Preset:
    """Register ``name`` as model ``base`` with ``knobs`` set (checked as a config's knobs are)."""
    check_knobs(base, knobs)
    preset = Preset(name, base, doc, knobs)
    register_model(name, model_inputs(base))(preset)
    return preset


def model_inputs(name: str) -> tuple[str, ...]:
    """The input forms (``1d``, ``2d``, ``tokens``) that model ``name`` takes."""
    MODELS.get(name, what="model")
    return _MODEL_INPUTS.get(name, ("1d", "2d"))


def _check_input(name: str, input_shape: tuple[int, ...]) -> None:
    forms = model_inputs(name)
    if "tokens" in forms and len(input_shape) == 1:
        return
    if any(INPUT_FORMS[f] == len(input_shape) and f != "tokens" for f in forms):
        return
    shapes = {"1d": "(C, L) sequences", "2d": "(C, H, W) images", "tokens": "(L,) token sequences"}
    raise ConfigError(
        f"model {name!r} takes {' or '.join(shapes[f] for f in forms)}; the data gives examples of shape "
        f"{tuple(input_shape)}"
    )


class Family(nn.Module):
    """A model family whose vocabulary knobs are named, with their defaults, on its class line.

    ``class ResNet(Family, width=16, depth=2)`` takes ``width`` and ``depth`` with the vocabulary's type
    and range; a subclass inherits them and may change a default on its own class line. The family's
    ``__init__`` declares only its own knobs and passes the rest on (``super().__init__(**knobs)``);
    the values given, or the defaults, are then ``self.knobs.width`` and so on.
    """

    knob_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **defaults: Any) -> None:
        super().__init_subclass__()
        unknown = sorted(set(defaults) - set(VOCABULARY))
        if unknown:
            raise TypeError(f"{cls.__name__}: {unknown} are not in the knob vocabulary; declare them in __init__")
        cls.knob_defaults = {**cls.knob_defaults, **defaults}
        # A knob is stated once: one the __init__ declares (a narrowed range) must not be on a class line too.
        init = vars(cls).get("__init__")
        twice = sorted(set(inspect.signature(init).parameters) & set(cls.knob_defaults)) if init else []
        if twice:
            raise TypeError(f"{cls.__name__}: {twice} are both class-line knobs and __init__ arguments")

    def __init__(self, **knobs: Any) -> None:
        super().__init__()
        unknown = sorted(set(knobs) - set(self.knob_defaults))
        if unknown:
            raise TypeError(f"unexpected knobs {unknown}")
        self.knobs = types.SimpleNamespace(**{**self.knob_defaults, **knobs})


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (``"res*"``)."""
    return MODELS.names(pattern)


@dataclasses.dataclass(frozen=True)
class KnobSpec:
    """One knob of one model: its default and, when the model declares them, its type and range."""

    name: str
    default: Any
    kind: type | None = None
    knob: Knob | None = None


def knob_specs(name: str) -> dict[str, KnobSpec]:
    """The knobs model ``name`` takes, in declaration order."""
    return _specs(MODELS.get(name, what="model"))


@functools.cache
def _specs(builder: ModelBuilder) -> dict[str, KnobSpec]:
    if isinstance(builder, Preset):
        return {
            k: dataclasses.replace(s, default=builder.knobs.get(k, s.default))
            for k, s in knob_specs(builder.base).items()
        }
    if not isinstance(builder, type):
        return _declared(builder)
    # A family's class-line knobs (type and range from the vocabulary), and its __init__'s keyword
    # arguments: a subclass adds its own and passes the rest on with ``**knobs``, so the classes below
    # nn.Module contribute, base classes first. Listed as the vocabulary orders its names, then the
    # family's own knobs as declared.
    specs: dict[str, KnobSpec] = {}
    if issubclass(builder, Family):
        for name, default in builder.knob_defaults.items():
            kind, knob = typing.get_args(VOCABULARY[name])
            specs[name] = KnobSpec(name, default, kind, knob)
    for cls in reversed(builder.__mro__[: builder.__mro__.index(nn.Module)]):
        if "__init__" in vars(cls):
            specs.update(_declared(vars(cls)["__init__"]))
    order = list(VOCABULARY)
    return {n: specs[n] for n in sorted(specs, key=lambda n: order.index(n) if n in order else len(order))}


def _declared(fn: Callable[..., Any]) -> dict[str, KnobSpec]:
    """The keyword arguments of ``fn`` (less the input shape and class count) as knobs."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError):  # annotations naming TYPE_CHECKING-only types: names and defaults only
        hints = {}
    specs = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in (*_POSITIONAL, "self") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        hint = hints.get(p.name)
        if typing.get_origin(hint) is Annotated:
            kind, *meta = typing.get_args(hint)
            specs[p.name] = KnobSpec(p.name, p.default, kind, next(m for m in meta if isinstance(m, Knob)))
        else:
            specs[p.name] = KnobSpec(p.name, p.default)
    return specs


def _family(name: str) -> str:
    """The registered family a name builds: itself, or a preset's base."""
    entry = MODELS.get(name, what="model")
    return _family(entry.base) if isinstance(entry, Preset) else name


def model_knobs(name: str) -> dict[str, Any]:
    """The knobs a model takes, with their defaults."""
    return {k: s.default for k, s in knob_specs(name).items()}


def check_knobs(name: str, knobs: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for a knob model ``name`` does not take or a value out of its range."""
    specs = knob_specs(name)
    given = {k: v for k, v in knobs.items() if v is not None}  # None knobs are dropped, as in timm
    for knob, value in given.items():
        spec = specs.get(knob)
        if spec is None:
            error = renamed(name, _family(name), knob)
            if error is not None:
                raise error
            raise ConfigError(
                f"model {name!r} does not take knob {knob!r}{did_you_mean(knob, specs)}; "
                f"it takes: {', '.join(specs) or '(none)'}"
            )
        if spec.knob is not None and spec.kind is not None:
            why = spec.knob.check(spec.kind, value)
            if why:
                raise ConfigError(f"model.{knob} {why} (model {name!r})")
    # Relations between knobs, on the values the model will get (defaults where none is given).
    values = {**model_knobs(name), **given}
    for knob, spec in specs.items():
        other = spec.knob.divides if spec.knob is not None else None
        if other is not None and values[other] % values[knob]:
            raise ConfigError(
                f"model.{knob} ({values[knob]}) must divide model.{other} ({values[other]}) (model {name!r})"
            )


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> nn.Module:
    """Build a registered model; ``None`` knobs are dropped so one config fits many models."""
    knobs = {k: v for k, v in knobs.items() if v is not None}
    check_knobs(name, knobs)
    _check_input(name, tuple(input_shape))
    try:
        return MODELS.get(name, what="model")(tuple(input_shape), num_classes, **knobs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {name!r} cannot be built with {knobs}: {exc}") from None


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
