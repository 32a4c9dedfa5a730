"""Plain ``nn.Module`` architectures, one file per family, registered by name.

Importing this package registers every family and preset; ``create_model`` builds one by name, and
``check_knobs`` validates a config's knobs (names, types, ranges) without building anything. It needs
torch alone (a test checks that lightning, mlflow, optuna, timm, torchvision, ... stay unimported).
"""

from dlsuite.models import (  # noqa: F401  (registers the families)
    alexnet,
    autoencoder,
    cnn,
    densenet,
    inception,
    lenet,
    mlp,
    mobilenet,
    recurrent,
    resnet,
    senet,
    seq2seq,
    transformer,
    vgg,
)
from dlsuite.models.api import (
    MODELS,
    check_knobs,
    count_params,
    create_model,
    list_models,
    model_inputs,
    model_knobs,
    register_model,
    register_preset,
)
from dlsuite.models.init import INITS, apply_init

__all__ = [
    "INITS",
    "MODELS",
    "apply_init",
    "check_knobs",
    "count_params",
    "create_model",
    "list_models",
    "model_inputs",
    "model_knobs",
    "register_model",
    "register_preset",
]
