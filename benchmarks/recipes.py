"""The benchmark recipes: one model, data set, optimiser and batch size each, as dlsuite config overrides.

Every mode of the harness builds its model, data and optimiser from the same overrides, so the
three loops run the same step. Two models exist only for the benchmark and are registered here
under ``bench_*`` names (the model zoo has its own ResNet and LSTM; the benchmark does not depend
on them, so that its figures stay comparable while the zoo changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dlsuite.models.api import MODELS, register_model


@dataclass(frozen=True)
class Recipe:
    """A training recipe as dlsuite config overrides, and how long to time it."""

    name: str
    overrides: list[str]
    epochs: int
    """Epochs per timed run; the first is warm-up (and compilation) and is not counted."""
    tiny: list[str] = field(default_factory=list)
    """Overrides that shrink the recipe to seconds for the test suite."""
    note: str = ""


class LSTMClassifier(nn.Module):
    """An LSTM over a ``(C, L)`` sequence (read as L steps of C features); a linear head on the last state."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_shape[0], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.transpose(1, 2))  # (B, L, hidden)
        return self.head(out[:, -1])  # (B, classes)


def _register() -> None:
    if "bench_resnet18" in MODELS:
        return

    @register_model("bench_resnet18")
    def bench_resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """torchvision's ResNet-18 as it is (ImageNet stem), as in the H100 figure of design.md."""
        from torchvision.models import resnet18

        return resnet18(num_classes=num_classes)

    @register_model("bench_lstm")
    def bench_lstm(input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 128, layers: int = 1) -> nn.Module:
        """One-layer LSTM classifier for MNIST-1D."""
        return LSTMClassifier(input_shape, num_classes, hidden, layers)


_register()

_NO_VAL = ["data.val_fraction=0", "data.args.val_samples=0"]

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "mnist1d_cnn",
            [
                "data.name=mnist1d",
                "data.batch_size=100",
                *_NO_VAL,
                "model.name=cnn",
                "model.width=25",
                "model.depth=3",
                "optim.name=adam",
                "optim.lr=1e-2",
            ],
            epochs=6,
            tiny=["data.train_samples=200", "model.width=8"],
            note="the MNIST-1D paper's CNN, Adam 1e-2, batch 100, 40 steps an epoch",
        ),
        Recipe(
            "resnet32",
            [
                "data.name=synthetic",
                "data.args={shape: [3, 32, 32], num_train: 2560, num_classes: 10}",
                "data.normalize=none",
                "data.batch_size=512",
                "data.val_fraction=0",
                "model.name=bench_resnet18",
                "optim.name=sgd",
                "optim.lr=0.1",
                "optim.momentum=0.9",
            ],
            epochs=3,
            tiny=["data.args={shape: [3, 16, 16], num_train: 64, num_test: 16}", "data.batch_size=16"],
            note="torchvision ResNet-18, synthetic CIFAR-shaped data, SGD momentum, batch 512",
        ),
        Recipe(
            "lstm_mnist1d",
            [
                "data.name=mnist1d",
                "data.batch_size=100",
                *_NO_VAL,
                "model.name=bench_lstm",
                "model.hidden=128",
                "optim.name=adam",
                "optim.lr=1e-2",
            ],
            epochs=3,
            tiny=["data.train_samples=200", "model.hidden=16"],
            note="one-layer LSTM (128 units) over the 40 steps of MNIST-1D, Adam 1e-2, batch 100",
        ),
    ]
}
