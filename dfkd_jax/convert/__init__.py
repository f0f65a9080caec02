"""PyTorch checkpoints (CMI/Fast, DFAD, DDP-wrapped) -> Flax variables and teacher folders.

    from dfkd_jax.convert import convert_checkpoint
    convert_checkpoint("cifar10_resnet34.pth", "teachers/cifar10_resnet34", dataset="cifar10")

or ``python tools/convert_torch_checkpoint.py SRC --dataset NAME --out DIR``. See docs/models.md.
"""

from dfkd_jax.convert.checkpoint import ConversionResult, convert_checkpoint
from dfkd_jax.convert.export import ZOOS, Exported, export_checkpoint, variables_to_state_dict
from dfkd_jax.convert.layout import KEY_SCHEMES, flax_name_to_torch
from dfkd_jax.convert.torch_to_flax import (convert_state_dict, convert_with_info, count_parameters,
                                            detect_architecture, generator_config, load_torch_state_dict,
                                            normalize_state_dict)
from dfkd_jax.teacher import CheckpointMismatchError

__all__ = [
    "CheckpointMismatchError",
    "ConversionResult",
    "Exported",
    "KEY_SCHEMES",
    "ZOOS",
    "convert_checkpoint",
    "convert_state_dict",
    "convert_with_info",
    "count_parameters",
    "detect_architecture",
    "export_checkpoint",
    "flax_name_to_torch",
    "generator_config",
    "load_torch_state_dict",
    "normalize_state_dict",
    "variables_to_state_dict",
]
