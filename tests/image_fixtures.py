"""Tiny image folders in the one-folder-per-class layout (ImageNet's validation layout), for tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Three real ImageNet wnids (standard indices 0, 1 and 2: tench, goldfish, great white shark) written
# out of order, so that a reader that does not sort gets the labels wrong.
WNIDS = ("n01443537", "n01440764", "n01484850")


def write_image_folder(
    root: os.PathLike | str,
    classes=WNIDS,
    per_class: int = 2,
    size: tuple[int, int] = (40, 52),
    seed: int = 0,
    ext: str = ".JPEG",
) -> dict[str, list[np.ndarray]]:
    """Writes ``per_class`` random RGB images (H, W = ``size``) into ``root/<class>/``.

    Returns {class: [uint8 (H, W, 3) arrays as written]} (for JPEG, the decoded pixels of the file).
    Images are smooth (blurred noise) so that JPEG keeps them close to what was drawn.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for c in classes:
        folder = Path(root) / c
        folder.mkdir(parents=True, exist_ok=True)
        written[c] = []
        for i in range(per_class):
            coarse = rng.integers(0, 256, (size[0] // 4 + 1, size[1] // 4 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR)
            path = folder / f"ILSVRC2012_val_{i:08d}{ext}"
            image.save(path, quality=95) if ext.lower() in (".jpeg", ".jpg") else image.save(path)
            with Image.open(path) as im:
                written[c].append(np.asarray(im.convert("RGB")))
    return written
