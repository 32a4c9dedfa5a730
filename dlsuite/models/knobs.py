"""The knob vocabulary: one name, one meaning, one declared type and range, for every family.

A family states a knob once, as a keyword argument of its ``nn.Module``'s ``__init__`` annotated with
one of the aliases below (``width: Width = 16``). The registry reads those annotations, so config
validation refuses a bad value (``model.dropout=1.5``) before anything is built, and ``docs/models.md``
lists the same vocabulary. A family whose range differs says so with ``Knob.where`` on the shared
declaration (the meaning stays the one of the vocabulary).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Annotated, Any

from dlsuite.errors import ConfigError
from dlsuite.models import layers
from dlsuite.registry import Registry


@dataclasses.dataclass(frozen=True)
class Knob:
    """What a knob means and which values it takes (bounds for numbers, choices for names)."""

    meaning: str
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: Collection[str] | Registry[Any] | None = None
    """Allowed names: a fixed tuple, or a registry (its names at check time)."""
    divides: str | None = None
    """Another knob of the same model that this one must divide (the transformer's ``heads`` and ``width``)."""

    def where(self, **changes: Any) -> Knob:
        """The same knob with a family's own range (``DEPTH.where(ge=0)``)."""
        return dataclasses.replace(self, **changes)

    def allowed(self) -> str:
        """The range in words: ``>= 1``, ``>= 0 and < 1``, ``one of 'max', 'avg'``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        pairs = ((">=", self.ge), (">", self.gt), ("<", self.lt), ("<=", self.le))
        words = [f"{op} {_num(v)}" for op, v in pairs if v is not None]
        if self.divides:
            words.append(f"divides `{self.divides}`")
        return " and ".join(words) or "any value"

    def check(self, kind: type, value: Any) -> str | None:
        """Why ``value`` is refused (one phrase), or None when it is allowed."""
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            return f"must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}"
        names = list(self.choices) if self.choices is not None else None
        if names is not None and value not in names:
            return f"must be {self.allowed()}, got {value!r}"
        if kind in (int, float):
            inside = (
                (self.ge is None or value >= self.ge)
                and (self.gt is None or value > self.gt)
                and (self.lt is None or value < self.lt)
                and (self.le is None or value <= self.le)
            )
            if not inside:
                return f"must be {self.allowed()}, got {value!r}"
        return None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


# -- the vocabulary --------------------------------------------------------------------------------------
WIDTH = Knob(
    "the main size: conv channels (of the first stage, doubling per stage), units per hidden layer (mlp), "
    "state size (recurrent), token features (transformer)",
    ge=1,
)
DEPTH = Knob("layers or blocks per stage (without `stages`: in the whole network)", ge=1)
STAGES = Knob("stages of blocks; each stage after the first halves the resolution", ge=1)
HIDDEN = Knob("units of each fully connected hidden layer of the classifier head", ge=1)
DROPOUT = Knob("dropout probability", ge=0, lt=1)
ACTIVATION = Knob("non-linearity", choices=layers.ACTIVATIONS)
NORM = Knob("normalisation after each conv / linear layer", choices=layers.NORMS)
POOL = Knob("pooling kind (inception: of its pool branch)", choices=("max", "avg"))
HEAD = Knob("how the features reach the classifier: global average pool or flatten", choices=("gap", "flatten"))
KERNEL_SIZE = Knob("convolution kernel size", ge=1)
FIRST_KERNEL_SIZE = Knob("kernel size of the first convolution", ge=1)
SHORTCUT = Knob("identity shortcut (residual) connections around blocks")
BLOCK = Knob("residual block: two 3x3 convs (basic) or 1x1-3x3-1x1 x4 (bottleneck)", choices=("basic", "bottleneck"))
BIDIRECTIONAL = Knob("read the sequence in both directions")

Width = Annotated[int, WIDTH]
Depth = Annotated[int, DEPTH]
Stages = Annotated[int, STAGES]
Hidden = Annotated[int, HIDDEN]
Dropout = Annotated[float, DROPOUT]
Activation = Annotated[str, ACTIVATION]
Norm = Annotated[str, NORM]
Pool = Annotated[str, POOL]
Head = Annotated[str, HEAD]
KernelSize = Annotated[int, KERNEL_SIZE]
FirstKernelSize = Annotated[int, FIRST_KERNEL_SIZE]
Shortcut = Annotated[bool, SHORTCUT]
Block = Annotated[str, BLOCK]
Bidirectional = Annotated[bool, BIDIRECTIONAL]

#: Each knob of the vocabulary by its name. A family that takes one with the shared range names it, with
#: its default, on its class line (``class VGG(ConvClassifier, width=16, ...)``); the type and range are
#: looked up here, so a name cannot mean two things in two families. A model's knobs are listed in this
#: order, then its own.
VOCABULARY: dict[str, Any] = {
    "width": Width,
    "stages": Stages,
    "depth": Depth,
    "block": Block,
    "shortcut": Shortcut,
    "bidirectional": Bidirectional,
    "kernel_size": KernelSize,
    "first_kernel_size": FirstKernelSize,
    "hidden": Hidden,
    "dropout": Dropout,
    "norm": Norm,
    "activation": Activation,
    "pool": Pool,
    "head": Head,
}

#: (family, old knob name) -> its name now. ``hidden`` is still the head's fully connected width for
#: alexnet / lenet / vgg; the recurrent families' state size is now ``width``, as every other family
#: calls its main size. Presets inherit their family's renames.
RENAMED = {
    ("cnn", "channels"): "width",
    **{(family, "hidden"): "width" for family in ("rnn", "lstm", "gru", "attention_seq2seq")},
    ("densenet", "blocks"): "stages",
    ("mlp", "residual"): "shortcut",
}


def renamed(model: str, family: str, knob: str) -> ConfigError | None:
    """The error for an old knob name of ``family`` (the model itself, or a preset's base), if it is one."""
    new = RENAMED.get((family, knob))
    return ConfigError(f"model.{knob} was renamed to model.{new} (model {model!r})") if new else None
