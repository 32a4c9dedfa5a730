"""Recurrent classifiers: ``rnn`` (Elman), ``lstm`` and ``gru``, uni- or bidirectional, stacked.

A ``(C, L)`` sequence is read as L steps of C features; a ``(C, H, W)`` image as H steps (rows) of
C*W features. The head reads the ``last`` hidden state (both directions when bidirectional), the
mean of all outputs (``gap``), or every output ``flatten``-ed: the MNIST-1D paper's GRU (bidirectional,
6 hidden units, flatten head) reached 91% that way. The LSTM's forget-gate bias starts at
``forget_bias`` (1.0; Jozefowicz et al., 2015) so that early gradients are not forgotten; it is set
in ``after_init``, which the shared initialiser calls after any ``model.init`` scheme.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlsuite.models.api import register_model
from dlsuite.models.common import check_choice, spatial_dims

_CELLS: dict[str, Any] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentClassifier(nn.Module):
    """``cell`` over the sequence -> dropout -> linear head on last state / mean / all outputs."""

    def __init__(
        self,
        cell: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: int,
        depth: int,
        bidirectional: bool,
        dropout: float,
        head: str,
        activation: str = "tanh",
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        dims = spatial_dims(input_shape)
        steps = input_shape[1]
        features = input_shape[0] if dims == 1 else input_shape[0] * input_shape[2]
        extra = {"nonlinearity": activation} if cell == "rnn" else {}
        self.rnn = _CELLS[cell](
            features,
            hidden,
            num_layers=depth,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if depth > 1 else 0.0,
            **extra,
        )
        self.head_kind = head
        self.forget_bias = forget_bias
        self.directions = 2 if bidirectional else 1
        out = hidden * self.directions * (steps if head == "flatten" else 1)
        self.dropout = nn.Dropout(dropout)
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


def _check(hidden: int, depth: int, dropout: float, head: str) -> None:
    check_choice("head", head, ("last", "gap", "flatten"))
    if hidden < 1 or depth < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError("need hidden >= 1, depth >= 1, 0 <= dropout < 1")


@register_model("rnn")
def rnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: int = 64,
    depth: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    head: str = "last",
    activation: str = "tanh",
) -> nn.Module:
    """Elman RNN; ``activation`` is ``tanh`` or ``relu`` (the two torch's RNN offers)."""
    _check(hidden, depth, dropout, head)
    check_choice("activation", activation, ("tanh", "relu"))
    return RecurrentClassifier(
        "rnn", input_shape, num_classes, hidden, depth, bidirectional, dropout, head, activation=activation
    )


@register_model("lstm")
def lstm(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: int = 64,
    depth: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    head: str = "last",
    forget_bias: float = 1.0,
) -> nn.Module:
    """LSTM with the forget-gate bias initialised to ``forget_bias``."""
    _check(hidden, depth, dropout, head)
    return RecurrentClassifier(
        "lstm", input_shape, num_classes, hidden, depth, bidirectional, dropout, head, forget_bias=forget_bias
    )


@register_model("gru")
def gru(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: int = 64,
    depth: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    head: str = "last",
) -> nn.Module:
    """GRU; the MNIST-1D paper's: ``hidden: 6, bidirectional: true, head: flatten``."""
    _check(hidden, depth, dropout, head)
    return RecurrentClassifier("gru", input_shape, num_classes, hidden, depth, bidirectional, dropout, head)
