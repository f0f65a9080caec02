"""Labelled images in the one-folder-per-class layout, read with PIL into uint8 NHWC arrays.

    root/
      n01440764/  ILSVRC2012_val_00000293.JPEG  ...
      n01443537/  ...

Classes are the sub-folders of ``root`` in sorted name order, label ``i`` the ``i``-th of them:
the convention of torchvision's ``datasets.ImageFolder`` (``DatasetFolder.find_classes``), so a
teacher trained on such a folder with torchvision keeps its class indices, and the 1,000 wnid
folders of the usual ImageNet validation layout get ImageNet's standard indices. Hidden
folders (a leading '.') are not classes. Files are found recursively under each class folder in
sorted order, by extension (torchvision's ``IMG_EXTENSIONS``, any case).

Each image is converted to the channel count of ``image_shape`` (``L`` for 1, ``RGB`` for 3),
resized so that its short side is ``resize`` (torchvision's ``Resize(int)``: the long side
becomes ``int(resize * long / short)``; bilinear, PIL's antialiasing), then centre-cropped to
``image_shape`` (torchvision's ``CenterCrop``: offsets ``round((size - crop) / 2)``, zero padding
where the image is smaller). ImageNet's evaluation transform is ``resize=256`` with a 224x224
shape. With ``resize=None`` the image is resized only as little as needed to cover the crop
(not at all when it already has the shape).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dfkd_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_MODES = {1: "L", 3: "RGB"}


class ImageFolderError(UserError, FileNotFoundError):
    """An image folder that is missing, empty, or not in the one-folder-per-class layout."""


def _layout_hint(root: Path) -> str:
    return (f"expected {root}/<class>/<image> with one sub-folder per class (e.g. the ImageNet validation "
            f"layout val/n01440764/*.JPEG) and images ending in {', '.join(IMAGE_EXTENSIONS)}")


def find_classes(root: os.PathLike | str) -> list[str]:
    """The class folder names under ``root``, sorted; ImageFolderError when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"Image folder {root} does not exist; {_layout_hint(root)}.")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ImageFolderError(f"Image folder {root} has no class sub-folders; {_layout_hint(root)}.")
    return classes


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def list_image_folder(
    root: os.PathLike | str, *, classes: Sequence[str] | None = None
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(image paths, int32 labels, class names) of an image folder, without reading any image.

    ``classes``: the class names in label order (e.g. a teacher's); every sub-folder must be one of
    them, and a class may have no folder or no images. Without it the classes are the sorted
    sub-folders, each of which must hold images.
    """
    root = Path(root)
    folders = find_classes(root)
    if classes is None:
        names = tuple(folders)
        index = {name: i for i, name in enumerate(names)}
    else:
        names = tuple(classes)
        index = {name: i for i, name in enumerate(names)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise ImageFolderError(f"Image folder {root}: sub-folder(s) {', '.join(unknown[:5])} name no class of "
                                   f"the {len(names)} given ({', '.join(names[:5])}, ...).")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for folder in folders:
        found = _images_under(root / folder)
        if not found:
            empty.append(folder)
        paths += found
        labels += [index[folder]] * len(found)
    if not paths:
        raise ImageFolderError(f"Image folder {root} holds no images; {_layout_hint(root)}.")
    if empty and classes is None:
        raise ImageFolderError(f"Image folder {root}: class folder(s) {', '.join(empty[:5])} hold no images "
                               f"(torchvision's ImageFolder refuses them too); {_layout_hint(root)}.")
    return paths, np.asarray(labels, np.int32), names


def _resize_short_side(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return im
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((new_w, new_h), Image.BILINEAR)


def _covering_short_side(size: tuple[int, int], height: int, width: int) -> int:
    """The least short side at which an image of PIL ``size`` (w, h) covers a height x width crop."""
    w, h = size
    if h <= w:  # h is the short side: need h' = s >= height and w' = s * w / h >= width
        return max(height, -(-width * h // w))
    return max(width, -(-height * w // h))


def _center_crop(a: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = a.shape[:2]
    if h < height or w < width:  # CenterCrop pads with zeros first
        top, left = max(height - h, 0), max(width - w, 0)
        a = np.pad(a, ((top // 2, (top + 1) // 2), (left // 2, (left + 1) // 2), (0, 0)))
        h, w = a.shape[:2]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return a[top:top + height, left:left + width]


def load_image(path: os.PathLike | str, image_shape: Sequence[int], *, resize: int | None = None) -> np.ndarray:
    """One image as uint8 (H, W, C) of ``image_shape``: channel conversion, short-side resize, centre crop."""
    height, width, channels = image_shape
    if channels not in _MODES:
        raise ValueError(f"image_shape must have 1 or 3 channels, got {tuple(image_shape)}")
    with Image.open(path) as im:
        im = im.convert(_MODES[channels])
        if resize is None and im.size != (width, height):
            resize = _covering_short_side(im.size, height, width)
        if resize is not None:
            im = _resize_short_side(im, int(resize))
        a = np.asarray(im, np.uint8)
    return _center_crop(a.reshape(a.shape[0], a.shape[1], channels), height, width)


def read_image_folder(
    root: os.PathLike | str,
    image_shape: Sequence[int],
    *,
    resize: int | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Reads a one-folder-per-class image folder: (uint8 images (N, *image_shape), int32 labels, class names).

    ``image_shape`` is (H, W, C) with C 1 or 3; ``resize`` the short side before the centre crop
    (ImageNet evaluation: 256 for 224x224); ``classes`` as in `list_image_folder`. Raises
    ImageFolderError (a user error) for a missing or empty folder.
    """
    paths, labels, names = list_image_folder(root, classes=classes)
    images = np.empty((len(paths), *tuple(image_shape)), np.uint8)
    for i, path in enumerate(paths):
        try:
            images[i] = load_image(path, image_shape, resize=resize)
        except (OSError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise ImageFolderError(f"Cannot read image {path}: {e}") from None
    return images, labels, names
