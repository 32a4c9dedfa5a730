"""Transfer learning: pretrained backbones (providers), input adaptation, freezing strategies.

Importing this package registers the ``backbones`` and ``transfer_strategies`` kinds and the
``transfer`` model (``model.name: transfer``).
"""

from dlsuite.transfer.model import TransferNet, check_transfer_config, transfer
from dlsuite.transfer.providers import BACKBONES, Backbone, PretrainedWeightsMissing, create_backbone
from dlsuite.transfer.strategies import TRANSFER_STRATEGIES

__all__ = [
    "BACKBONES",
    "TRANSFER_STRATEGIES",
    "Backbone",
    "PretrainedWeightsMissing",
    "TransferNet",
    "check_transfer_config",
    "create_backbone",
    "transfer",
]
