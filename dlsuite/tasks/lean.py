"""A mixin that trims Lightning's per-step bookkeeping cost from a LightningModule.

Lightning records the hook it is in by setting ``pl_module._current_fx_name`` twice around every
hook call: about 45 times per training step. Each goes through ``nn.Module.__setattr__``, which
checks the value against parameters, buffers and submodules (about 13 us each on the 2-core CPU,
0.3-0.6 ms per step: a tenth of the MNIST-1D CNN's step). The names below only ever hold plain
Python values, so they are stored directly.
"""

from __future__ import annotations

from typing import Any

# Attributes Lightning sets on the module per hook call; never tensors, parameters or modules.
_PLAIN_ATTRS = frozenset({"_current_fx_name"})


class LeanHooks:
    """Mix in before ``L.LightningModule``: ``class Task(LeanHooks, L.LightningModule)``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRS and (value is None or isinstance(value, str)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
