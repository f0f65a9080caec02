"""What a run leaves in its workdir besides checkpoints: metrics.jsonl, sample grids,
results.json, and the one-screen summary."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from PIL import Image


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl``."""

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def image_grid(images: np.ndarray, mean, std, columns: int = 8, scale: int = 2) -> Image.Image:
    """NHWC images in the networks' (normalised) input space -> one uint8 grid image."""
    images = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + col * (w + 2): 2 + col * (w + 2) + w] = img
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return Image.fromarray(grid[..., 0] if c == 1 else grid)


def save_grid(path: str, images: np.ndarray, mean, std) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_grid(images, mean, std).save(path)


def summary_text(results: dict[str, Any]) -> str:
    s, t = results["student"], results["teacher"]
    lines = [
        f"dfkd_jax  {results['method']}  on {results['dataset']}  ({results['rounds']} rounds, "
        f"batch {results['batch_size']}, {results['devices']} device(s))",
        f"  teacher  {t['arch']:<18} test accuracy {100 * t['accuracy']:6.2f}%",
        f"  student  {s['arch']:<18} best {100 * s['best']:6.2f}% (round {s['best_round']})   "
        f"last {100 * s['last']:6.2f}%   mean {100 * s['mean']:6.2f}%",
        f"  agreement with teacher (Agree@1) {100 * results['agree']:6.2f}%   probability loyalty {results['loyalty']:.4f}",
        f"  wall time {results['wall_time_s']:.1f} s (compile {results['compile_s']:.1f} s)   "
        f"{results['images_per_s']:.0f} synthetic images/s",
        f"  outputs in {results['workdir']}: results.json, metrics.jsonl, samples/, checkpoints/",
    ]
    width = max(len(x) for x in lines)
    bar = "=" * width
    return "\n".join([bar, *lines, bar])
