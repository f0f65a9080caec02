"""ImageNet (ILSVRC-2012) evaluation images from the usual one-folder-per-wnid layout.

    ILSVRC2012/val/n01440764/ILSVRC2012_val_00000293.JPEG
    ILSVRC2012/val/n01443537/...

(the validation set sorted into wnid folders, as torchvision's ``ImageFolder`` / ``ImageNet``
read it; ``train/`` has the same layout). The label of a wnid is its index in the sorted list of
the 1,000 ILSVRC-2012 wnids, the standard one every ImageNet classifier (torchvision's included)
was trained with; the list is read from tensorflow-datasets' ``imagenet2012/labels.txt``, so a
folder holding only some classes still gets the standard labels. Images go through
torchvision's evaluation transform: short side resized to 256, centre crop 224
(``dfkd_jax.data.image_folder``). A split is read whole into memory: the 50,000 validation images
take 7.5 GB as uint8.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from dfkd_jax.data.image_folder import ImageFolderError, find_classes, read_image_folder

RESIZE = 256  # torchvision's ImageNet evaluation: Resize(256) then CenterCrop(224)
LAYOUT = ("the ImageNet validation (or train) images sorted into one folder per wnid, e.g. "
          "val/n01440764/ILSVRC2012_val_00000293.JPEG")


@functools.lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 wnids in sorted order (label i is the i-th)."""
    from importlib.resources import files

    text = files("tensorflow_datasets").joinpath("datasets/imagenet2012/labels.txt").read_text()
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == 1000 and list(names) == sorted(names), "tensorflow-datasets' ImageNet labels changed"
    return names


def find_split_folder(source_dir: os.PathLike | str, split: str) -> Path:
    """The wnid folder of ``split`` ('test' reads the validation set) under ``source_dir``:
    ``source_dir`` itself when its sub-folders are wnids, else ``val``/``train`` (or ``ILSVRC2012/...``)."""
    names = ("val", "validation") if split in ("test", "val", "validation") else ("train",)
    root = Path(source_dir)
    for candidate in [root] + [root / n for n in names] + [root / "ILSVRC2012" / n for n in names]:
        if candidate.is_dir():
            try:
                folders = find_classes(candidate)
            except ImageFolderError:
                continue
            if folders[0].startswith("n") and folders[0] in set(wnids()):
                return candidate
    raise ImageFolderError(f"No ImageNet {split} images under {root}: expected {LAYOUT} "
                           f"(pass the folder that holds the wnid folders, or its parent).")


def read_imagenet(source_dir: os.PathLike | str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 224, 224, 3), int32 standard labels) of the ImageNet ``split`` under ``source_dir``."""
    images, labels, _ = read_image_folder(find_split_folder(source_dir, split), (224, 224, 3), resize=RESIZE,
                                          classes=wnids())
    return images, labels
