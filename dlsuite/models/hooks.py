"""Optional hooks a model may offer the rest of the suite, declared as protocols.

A plain ``nn.Module`` needs none of them. The transfer model uses the first three: its backbone and
head learn at different rates, it asks for the gradual-unfreezing callback, and it names the run it
came from. Checked with ``isinstance`` where they are used, never looked up by attribute name.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class HasParamGroups(Protocol):
    """Parameter groups with their own learning rates (the optimiser splits each for weight decay)."""

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]: ...


@runtime_checkable
class HasCallbacks(Protocol):
    """Lightning callbacks the model needs during training."""

    def callbacks(self) -> list[Any]: ...


@runtime_checkable
class HasTrackingTags(Protocol):
    """MLflow tags naming where the model came from (a source run, pretrained weights)."""

    tracking_tags: dict[str, str]


@runtime_checkable
class HasAfterInit(Protocol):
    """Re-applies what a weight initialisation must not undo (an LSTM's forget-gate bias)."""

    def after_init(self) -> None: ...
