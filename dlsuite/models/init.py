"""Weight initialisation, applied by one shared function to every model (``model.init`` knob).

Weights of linear, conv and recurrent layers are set by the named scheme and their biases zeroed;
normalisation layers keep weight 1 / bias 0. A module may define ``after_init()`` to restore a
deliberate choice afterwards (the LSTM's large forget-gate bias, for example).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from dlsuite.models.hooks import HasAfterInit
from dlsuite.registry import Registry

Initialiser = Callable[[torch.Tensor, float], object]
INITS: Registry[Initialiser | None] = Registry("inits", "weight initialisations")

INITS.add("default", None)  # keep PyTorch's per-layer defaults
INITS.add("zeros", lambda w, std: nn.init.zeros_(w))
INITS.add("normal", lambda w, std: nn.init.normal_(w, 0.0, std))
INITS.add("uniform", lambda w, std: nn.init.uniform_(w, -std, std))
INITS.add("xavier_uniform", lambda w, std: nn.init.xavier_uniform_(w))
INITS.add("xavier_normal", lambda w, std: nn.init.xavier_normal_(w))
INITS.add("kaiming_uniform", lambda w, std: nn.init.kaiming_uniform_(w, nonlinearity="relu"))
INITS.add("kaiming_normal", lambda w, std: nn.init.kaiming_normal_(w, nonlinearity="relu"))
INITS.add("orthogonal", lambda w, std: nn.init.orthogonal_(w))


@INITS.register("lecun_normal")
def _lecun_normal(w: torch.Tensor, std: float) -> None:
    fan_in = w[0].numel()  # in_features * kernel elements
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in))


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.RNNBase)


@torch.no_grad()
def apply_init(model: nn.Module, name: str, std: float = 0.02) -> nn.Module:
    """Initialise ``model`` in place with the scheme ``name`` and return it."""
    fn = INITS.get(name, what="init")
    if fn is not None:
        for module in model.modules():
            if not isinstance(module, _LAYERS):
                continue
            for pname, p in module.named_parameters(recurse=False):
                if pname.startswith("bias"):
                    nn.init.zeros_(p)
                elif p.dim() >= 2:
                    fn(p, std)
    for module in model.modules():
        if isinstance(module, HasAfterInit):
            module.after_init()
    return model
