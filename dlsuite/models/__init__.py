"""Plain ``nn.Module`` architectures, one file per family, registered by name.

Importing this package registers every family; ``create_model`` builds one by name.
"""

from dlsuite.models import cnn, mlp  # noqa: F401  (registers the families)
from dlsuite.models.api import MODELS, count_params, create_model, list_models, register_model
from dlsuite.models.init import INITS, apply_init

__all__ = [
    "INITS",
    "MODELS",
    "apply_init",
    "count_params",
    "create_model",
    "list_models",
    "register_model",
]
