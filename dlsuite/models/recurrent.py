"""Recurrent classifiers: ``rnn`` (Elman), ``lstm`` and ``gru``, uni- or bidirectional, stacked.

The three share one class; each registered name is a subclass that fixes the cell (and adds the
knob only it has). A ``(C, L)`` sequence is read as L steps of C features; a ``(C, H, W)`` image as
H steps (rows) of C*W features. The head reads the ``last`` hidden state (both directions when
bidirectional), the mean of all outputs (``gap``), or every output ``flatten``-ed: the MNIST-1D
paper's GRU (bidirectional, 6 units, flatten head: the ``mnist1d_gru`` preset) reached 91% that way.
The LSTM's forget-gate bias starts at ``forget_bias`` (1.0; Jozefowicz et al., 2015) so that early
gradients are not forgotten; it is set in ``after_init``, which the shared initialiser calls after
any ``model.init`` scheme.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models.api import Family, register_model, register_preset
from dlsuite.models.common import spatial_dims
from dlsuite.models.knobs import ACTIVATION, HEAD, Knob

RecurrentHead = Annotated[str, HEAD.where(choices=("last", "gap", "flatten"))]
RnnActivation = Annotated[str, ACTIVATION.where(choices=("tanh", "relu"))]
ForgetBias = Annotated[float, Knob("initial forget-gate bias of the LSTM")]

_CELLS: dict[str, Any] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(Family, width=64, depth=1, bidirectional=False, dropout=0.0):
    """``cell`` over the sequence -> dropout -> linear head on last state / mean / all outputs."""

    cell = "gru"
    forget_bias = 0.0
    nonlinearity: str | None = None  # the Elman cell's, set by ``RNN``

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, *, head: RecurrentHead = "last", **knobs: Any
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        cell_options = {"nonlinearity": self.nonlinearity} if self.nonlinearity else {}
        dims = spatial_dims(input_shape)
        steps = input_shape[1]
        features = input_shape[0] if dims == 1 else input_shape[0] * input_shape[2]
        self.rnn = _CELLS[self.cell](
            features,
            k.width,
            num_layers=k.depth,
            batch_first=True,
            bidirectional=k.bidirectional,
            dropout=k.dropout if k.depth > 1 else 0.0,
            **cell_options,
        )
        self.head_kind = head
        self.directions = 2 if k.bidirectional else 1
        out = k.width * self.directions * (steps if head == "flatten" else 1)
        self.dropout = nn.Dropout(k.dropout)
        self.head = nn.Linear(out, num_classes)
        self.after_init()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B, C, L) -> (B, L, C)
            seq = x.transpose(1, 2)
        else:  # (B, C, H, W) -> (B, H, C*W): one row per step
            seq = x.permute(0, 2, 1, 3).flatten(2)
        out, state = self.rnn(seq)  # out: (B, T, dirs*H)
        if self.head_kind == "flatten":
            z = out.flatten(1)  # (B, T*dirs*H)
        elif self.head_kind == "gap":
            z = out.mean(1)  # (B, dirs*H)
        else:
            h = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
            z = h[-self.directions :].transpose(0, 1).flatten(1)  # (B, dirs*H): top layer, each direction
        return self.head(self.dropout(z))  # (B, classes)

    @torch.no_grad()
    def after_init(self) -> None:
        """LSTM: forget-gate bias to ``forget_bias`` (gates are ordered input, forget, cell, output)."""
        if not isinstance(self.rnn, nn.LSTM):
            return
        h = self.rnn.hidden_size
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                p[h : 2 * h].fill_(self.forget_bias)
            elif name.startswith("bias_hh"):
                p[h : 2 * h].zero_()  # the two biases add up; keep their sum at forget_bias


@register_model("gru")
class GRU(RecurrentClassifier):
    """GRU classifier; the MNIST-1D paper's is the ``mnist1d_gru`` preset."""

    cell = "gru"


@register_model("rnn")
class RNN(RecurrentClassifier):
    """Elman RNN; ``activation`` is ``tanh`` or ``relu`` (the two torch's RNN offers)."""

    cell = "rnn"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, *, activation: RnnActivation = "tanh", **knobs: Any
    ) -> None:
        self.nonlinearity = activation  # a plain str, read during the base __init__
        super().__init__(input_shape, num_classes, **knobs)


@register_model("lstm")
class LSTM(RecurrentClassifier):
    """LSTM with the forget-gate bias initialised to ``forget_bias``."""

    cell = "lstm"

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, *, forget_bias: ForgetBias = 1.0, **knobs: Any
    ) -> None:
        self.forget_bias = forget_bias  # a plain float, read by after_init during the base __init__
        super().__init__(input_shape, num_classes, **knobs)


mnist1d_gru = register_preset(
    "mnist1d_gru",
    "gru",
    "The MNIST-1D paper's GRU: bidirectional, 6 units, a linear head on every step's output (91%).",
    width=6,
    bidirectional=True,
    head="flatten",
)
