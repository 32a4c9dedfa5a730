"""Plain ``nn.Module`` architectures, one file per family, registered by name.

Importing this package registers every family; ``create_model`` builds one by name.
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
from dlsuite.models.api import MODELS, count_params, create_model, list_models, model_inputs, register_model
from dlsuite.models.init import INITS, apply_init

__all__ = [
    "INITS",
    "MODELS",
    "apply_init",
    "count_params",
    "create_model",
    "list_models",
    "model_inputs",
    "register_model",
]
