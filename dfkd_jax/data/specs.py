"""Static facts about the supported image-classification datasets."""

from __future__ import annotations

import dataclasses

from dfkd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model and the input pipeline need to know about a dataset.

    Attributes:
      name: the name `load_split` accepts.
      num_classes: number of labels.
      image_shape: (H, W, C) of the model input after `pipeline.preprocess`
        (28x28 images are zero-padded to 32x32).
      raw_shape: (H, W, C) of the uint8 images `load_split` returns.
      mean, std: per-channel normalisation constants, for pixels scaled to [0, 1].
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    raw_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


_FMNIST_MEAN, _FMNIST_STD = 0.2860, 0.3530

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion_mnist", 10, (32, 32, 1), (28, 28, 1), (_FMNIST_MEAN,), (_FMNIST_STD,)),
        DatasetSpec("mnist", 10, (32, 32, 1), (28, 28, 1), (0.1307,), (0.3081,)),
        DatasetSpec(
            "cifar10", 10, (32, 32, 3), (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
        ),
        DatasetSpec(
            "cifar100", 100, (32, 32, 3), (32, 32, 3), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
        ),
        # Fashion-MNIST padded to 32x32 and repeated to 3 channels (for 3-channel teachers).
        DatasetSpec(
            "fashion_mnist32x3", 10, (32, 32, 3), (32, 32, 3), (_FMNIST_MEAN,) * 3, (_FMNIST_STD,) * 3
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """Returns the spec of dataset `name`; ValueError naming the valid names if unknown."""
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(SPECS))}") from None
