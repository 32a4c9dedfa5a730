"""Declared types and ranges of every dataset's ``data.args``: one pydantic model per dataset.

Validation reads these without importing a data module (no Lightning, no torchvision), so a bad
``data.args`` value is refused before anything runs. Each data module's ``ARGS`` defaults must equal
its model's defaults here (a test checks it, and MNIST-1D's against the ``mnist1d`` package's own).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from dlsuite.errors import ConfigError, refuse_unknown

PosInt = Field(ge=1)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(_Args):
    """The dataset takes no ``data.args``."""


class MNIST1DArgs(_Args):
    """Arguments of the ``mnist1d`` package's generator (its defaults: the paper's dataset)."""

    num_samples: int = Field(5000, ge=2)
    train_split: float = Field(0.8, gt=0.0, lt=1.0)
    template_len: int = Field(12, ge=1)
    padding: list[int] = Field(default_factory=lambda: [36, 60], min_length=2, max_length=2)
    scale_coeff: float = Field(0.4, ge=0.0)
    max_translation: int = Field(48, ge=0)
    corr_noise_scale: float = Field(0.25, ge=0.0)
    iid_noise_scale: float = Field(0.02, ge=0.0)
    shear_scale: float = Field(0.75, ge=0.0)
    shuffle_seq: StrictBool = False
    final_seq_length: int = Field(40, ge=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    val_samples: int = Field(0, ge=0)
    """Generate a separate validation set of this size (0: hold out training data instead)."""


class ImageFolderArgs(_Args):
    grayscale: StrictBool = False
    max_in_memory: int = Field(50000, ge=1)


class DigitSequencesArgs(_Args):
    op: Literal["reverse", "sort", "copy"] = "reverse"
    length: int = Field(8, ge=1)
    vocab: int = Field(10, ge=2)
    num_train: int = Field(5000, ge=1)
    num_val: int = Field(500, ge=1)
    num_test: int = Field(1000, ge=1)


class SyntheticArgs(_Args):
    shape: list[int] = Field(default_factory=lambda: [3, 32, 32], min_length=1)
    num_classes: int = Field(10, ge=2)
    num_train: int = Field(5120, ge=1)
    num_test: int = Field(1024, ge=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)


#: Dataset name -> the model of its ``data.args``.
DATASET_ARGS: dict[str, type[_Args]] = {
    "mnist1d": MNIST1DArgs,
    "digits": NoArgs,
    "mnist": NoArgs,
    "fashion_mnist": NoArgs,
    "cifar10": NoArgs,
    "cifar100": NoArgs,
    "image_folder": ImageFolderArgs,
    "digit_sequences": DigitSequencesArgs,
    "synthetic": SyntheticArgs,
}


def defaults(name: str) -> dict[str, Any]:
    """The default ``data.args`` of dataset ``name``."""
    return DATASET_ARGS[name]().model_dump()


def check_args(name: str, args: dict[str, Any]) -> None:
    """Refuse ``data.args`` the dataset does not take, or values of the wrong type or range."""
    model = DATASET_ARGS[name]
    refuse_unknown(args, list(model.model_fields), f"dataset {name!r}", "data.args.{}")
    try:
        # ints are fine where floats are declared (YAML writes 1 for 1.0)
        model.model_validate({k: float(v) if _wants_float(model, k, v) else v for k, v in args.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"data.args.{loc}: {err['msg']} (got {err.get('input')!r})") from None


def _wants_float(model: type[_Args], key: str, value: Any) -> bool:
    return model.model_fields[key].annotation is float and type(value) is int
