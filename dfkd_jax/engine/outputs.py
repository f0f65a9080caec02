"""What a run leaves in its workdir besides checkpoints: metrics.jsonl, TensorBoard scalars,
sample grids, the accuracy plot, results.json, and the one-screen summary."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl``."""

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def keep_until(self, last_round: int) -> int:
        """Drop the records of rounds after ``last_round`` (and a line cut short by a kill): a resumed run
        computes those rounds again, so each round keeps one record. Returns how many were dropped."""
        if not (self.enabled and os.path.isfile(self.path)):
            return 0
        with open(self.path) as f:
            lines = f.read().splitlines()
        kept = []
        for line in lines:
            try:
                if int(json.loads(line)["round"]) <= last_round:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass
        if len(kept) < len(lines):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        return len(lines) - len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


class TensorBoardWriter:
    """The same records as ``metrics.jsonl`` as TensorBoard scalars in ``<workdir>/tensorboard``,
    written by ``tensorboardX`` (no TensorFlow; ``pip install 'dfkd_jax[tensorboard]'``). Without
    it installed, or when not ``enabled``, it writes nothing."""

    def __init__(self, logdir: str, enabled: bool = True, log=None):
        self.writer = None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            if log:
                log("TensorBoard scalars are off: tensorboardX is not installed "
                    "(pip install 'dfkd_jax[tensorboard]'); metrics.jsonl has the same numbers.")
            return
        self.writer = SummaryWriter(logdir=logdir, flush_secs=30)

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step, kind = int(record["round"]), record.get("kind", "train")
        for key, value in record.items():
            if key in ("round", "kind") or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(key if "/" in key else f"{kind}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (120, 120, 120), (188, 189, 34), (23, 190, 207))


def curves_plot(series: list[tuple[str, list[float], list[float]]], xlabel: str, title: str = "",
                size: tuple[int, int] = (720, 420), colours=None) -> Image.Image:
    """Curves of values in [0, 1] (drawn in %) against x, one ``(label, xs, ys)`` per series, with a legend
    (matplotlib, ``dfkd_jax.plots.curves_figure``), as a PIL image of ``size`` pixels; ``colours`` are RGB
    tuples (0-255) or matplotlib colour names."""
    from dfkd_jax import plots

    colours = [c if isinstance(c, str) else "#%02x%02x%02x" % tuple(c) for c in (colours or PALETTE)]
    return plots.to_image(plots.curves_figure(series, xlabel, title, size, colours))


def accuracy_plot(history: list[dict[str, Any]], title: str = "", size: tuple[int, int] = (720, 420)) -> Image.Image:
    """Student test accuracy, Agree@1 and the teacher's accuracy (in %) against the round, as a PNG-ready image."""
    series = [(label, [h["round"] for h in history if key in h], [h[key] for h in history if key in h])
              for label, key in (("student accuracy", "accuracy"), ("Agree@1", "agree"),
                                 ("teacher accuracy", "teacher_accuracy"))]
    return curves_plot(series, "round", title, size, colours=(PALETTE[0], PALETTE[1], PALETTE[7]))


def save_accuracy_plot(path: str, history: list[dict[str, Any]], title: str = "") -> None:
    accuracy_plot(history, title).save(path)


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


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, mean, std, class_names=(),
               per_class: int = 8, scale: int = 2) -> Image.Image:
    """A row per class of up to ``per_class`` of ``images`` (NHWC, normalised by ``mean``/``std``) whose
    ``labels`` (the teachers' predictions) are that class, blank where fewer; each row is labelled at the
    left with the class's name (or index) and how many of the images the teachers gave it."""
    pixels = np.clip(np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0, 1)
    labels = np.asarray(labels)
    rows = []
    for k in range(num_classes):
        row = np.ones((per_class, *pixels.shape[1:]), np.float32)
        picked = pixels[labels == k][:per_class]
        row[: len(picked)] = picked
        rows.append(row)
    grid = image_grid(np.concatenate(rows), 0.0, 1.0, columns=per_class, scale=scale).convert("RGB")
    margin, row_h = 150, (pixels.shape[1] + 2) * scale
    img = Image.new("RGB", (grid.width + margin, grid.height), "white")
    img.paste(grid, (margin, 0))
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for k in range(num_classes):
        name = class_names[k] if k < len(class_names) else f"class {k}"
        draw.text((6, 2 * scale + k * row_h + row_h // 2 - 8), f"{k} {name} ({int(np.sum(labels == k))})",
                  fill="black", font=font)
    return img


def save_class_grid(path: str, images: np.ndarray, labels: np.ndarray, num_classes: int, mean, std,
                    class_names=()) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    class_grid(images, labels, num_classes, mean, std, class_names).save(path)


def save_grid(path: str, images: np.ndarray, mean, std) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_grid(images, mean, std).save(path)


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours, class 0 black: the bits of the class index spread over the
    high bits of R, G and B (the PASCAL VOC colour map), so neighbouring indices differ strongly."""
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        v, rgb = c, [0, 0, 0]
        for shift in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((v >> ch) & 1) << shift
            v >>= 3
        colours[c] = rgb
    return colours


def segmentation_grid(images: np.ndarray, teacher_masks: np.ndarray, student_masks: np.ndarray, mean, std,
                      num_classes: int, columns: int = 4, scale: int = 2) -> Image.Image:
    """Triplets side by side: each image (normalised NHWC), the teacher's and the student's predicted
    class maps (``(N, H, W)``) coloured by ``palette``; ``columns`` triplets per row."""
    images = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    colours = palette(num_classes)
    tiles = []
    for img, t, s in zip(images, teacher_masks, student_masks):
        tiles += [img, colours[np.clip(t, 0, num_classes - 1)], colours[np.clip(s, 0, num_classes - 1)]]
    n, (h, w) = len(tiles), images.shape[1:3]
    per_row = 3 * columns
    rows = math.ceil(n / per_row)
    grid = np.full((rows * (h + 2) + 2, per_row * (w + 2) + 2 + 4 * (columns - 1), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, per_row)
        x0 = 2 + col * (w + 2) + 4 * (col // 3)  # a wider gap between triplets
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, x0: x0 + w] = tile
    return Image.fromarray(np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1))


def save_segmentation_grid(path: str, images, teacher_masks, student_masks, mean, std, num_classes: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    segmentation_grid(images, teacher_masks, student_masks, mean, std, num_classes).save(path)


def summary_text(results: dict[str, Any]) -> str:
    s, t = results["student"], results["teacher"]
    metric = results.get("metric", "accuracy")  # 'miou' for segmentation runs
    if metric == "miou":
        agreement = (f"  per-pixel agreement with teacher {100 * results['agree']:6.2f}%   student pixel accuracy "
                     f"{100 * results['pixel_accuracy']:6.2f}% (teacher {100 * t['pixel_accuracy']:6.2f}%)")
    else:
        agreement = (f"  agreement with teacher (Agree@1) {100 * results['agree']:6.2f}%   probability loyalty "
                     f"{results['loyalty']:.4f}")
    if results.get("accuracy_measured", True):
        label = {"accuracy": "accuracy", "miou": "mIoU"}[metric]
        scores = [f"  teacher  {t['arch']:<18} test {label} {100 * t[metric]:6.2f}%",
                  f"  student  {s['arch']:<18} {'mIoU ' if metric == 'miou' else ''}best {100 * s['best']:6.2f}% "
                  f"(round {s['best_round']})   last {100 * s['last']:6.2f}%   mean {100 * s['mean']:6.2f}%", agreement]
    else:  # a run without evaluation data (engine.loop.score_student)
        scores = [f"  teacher  {t['arch']:<18} no evaluation data: no accuracy was measured",
                  f"  student  {s['arch']:<18} Agree@1 with the teacher on {results['synthetic_eval_samples']} "
                  f"synthetic samples: best {100 * s['best']:6.2f}% (round {s['best_round']})   "
                  f"last {100 * s['last']:6.2f}%", f"  probability loyalty {results['loyalty']:.4f}   score it on "
                  f"labelled images: python -m dfkd_jax.evaluate {results['workdir']} --images DIR"]
    lines = [
        f"dfkd_jax  {results['method']}  on {results['dataset']}  ({results['rounds']} rounds, "
        f"batch {results['batch_size']}, {results['devices']} device(s))",
        *scores,
        f"  wall time {results['wall_time_s']:.1f} s (compile {results['compile_s']:.1f} s)   "
        + (results.get("images_per_s_note") or f"{results['images_per_s']:.0f} synthetic images/s"),
        f"  outputs in {results['workdir']}: results.json, metrics.jsonl, accuracy.png, samples/, checkpoints/",
    ]
    width = max(len(x) for x in lines)
    bar = "=" * width
    return "\n".join([bar, *lines, bar])
