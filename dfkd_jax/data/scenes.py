"""Fashion-MNIST scenes: a segmentation benchmark made of real Fashion-MNIST garments.

These machines reach no segmentation dataset, so this one is built from real images
they hold: each scene is a black ``size`` x ``size`` canvas on which ``min_items`` to
``max_items`` garments (drawn uniformly from one Fashion-MNIST split) are pasted one
after the other, each resized (bilinear) from 28x28 to a random side in
``[min_side, max_side]`` at a random position fully inside the canvas. A garment's
*visible* pixels are those of intensity >= ``VISIBLE`` (32 of 255): they overwrite the
canvas and get the garment's label (class + 1); its fainter pixels leave what lies
beneath. Label 0 is the background. So every pixel labelled c > 0 shows a visible pixel
of the topmost garment of class c - 1 there, and every background pixel is 0.

Deterministic from ``seed`` and the split: train scenes use only training garments,
test scenes only test garments. ``make_scenes(..., return_layout=True)`` also returns
each scene's placements ``(garment index, top, left, side)`` in paste order (tests
rebuild the labels from them).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

VISIBLE = 32  # a garment pixel of at least this intensity (of 255) is visible and labelled
SPLIT_SEED = {"train": 0, "test": 1}
# Scenes per split in the built dataset (dfkd_jax.data.builders.FashionMnistScenesBuilder).
NUM_SCENES = {"train": 10000, "test": 1000}


def _resize(garment: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(garment).resize((side, side), Image.BILINEAR))


def make_scenes(garments: np.ndarray, labels: np.ndarray, count: int, *, seed: int = 0, size: int = 32,
                min_items: int = 2, max_items: int = 4, min_side: int = 12, max_side: int = 24,
                return_layout: bool = False):
    """``count`` scenes from uint8 ``garments`` (N, 28, 28[, 1]) and their int ``labels`` (N,).

    Returns uint8 images ``(count, size, size, 1)`` and uint8 label maps ``(count, size, size)``
    (0 = background, c + 1 = class c), and with ``return_layout`` the placements.
    """
    if not 1 <= min_items <= max_items or not 1 <= min_side <= max_side <= size:
        raise ValueError("need 1 <= min_items <= max_items and 1 <= min_side <= max_side <= size")
    garments = np.asarray(garments).reshape(len(garments), 28, 28)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size), np.uint8)
    maps = np.zeros((count, size, size), np.uint8)
    layout = []
    for s in range(count):
        placed = []
        for _ in range(int(rng.integers(min_items, max_items + 1))):
            g = int(rng.integers(len(garments)))
            side = int(rng.integers(min_side, max_side + 1))
            top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            patch = _resize(garments[g], side)
            visible = patch >= VISIBLE
            images[s, top:top + side, left:left + side][visible] = patch[visible]
            maps[s, top:top + side, left:left + side][visible] = labels[g] + 1
            placed.append((g, top, left, side))
        layout.append(placed)
    images = images[..., None]
    return (images, maps, layout) if return_layout else (images, maps)


def scenes_of_split(garments: np.ndarray, labels: np.ndarray, split: str, count: int | None = None):
    """The benchmark's scenes of ``split`` ('train' or 'test') from that split's garments."""
    return make_scenes(garments, labels, NUM_SCENES[split] if count is None else count, seed=SPLIT_SEED[split])
