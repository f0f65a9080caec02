"""What ZSKD's student augmentations do to real images: the teacher's labels on the 103 views.

For every variant of ``dfkd_jax.augment_zskd.VARIANTS`` (and each translation fill), applied to the
test split in pixel space, the teacher's accuracy against the true labels, its agreement with its own
label on the un-augmented image, and the share of each predicted class; per family and overall.
Optionally a grid (``--grid``): the 21 single views of a T-shirt and a sneaker of the test split, one row per
image and fill.

    python tools/zskd_views.py --teacher docs/results_runs/teachers/fashion_mnist_lenet5_noise0 \
        [--n 2000] [--fills 1.0,0.0] [--grid views.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax import augment_zskd
from dfkd_jax.data import load_split
from dfkd_jax.data.pipeline import fit_shape
from dfkd_jax.teacher import load_teacher


def family(row) -> str:
    scale, direction, angle, flip = row
    parts = [n for n, on in (("scale", scale != 1.0), ("translate", direction >= 0), ("rotate", angle != 0.0),
                             ("flip", flip != 0)) if on]
    return "+".join(parts) or "identity"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--n", type=int, default=2000, help="test images used (the first n)")
    ap.add_argument("--fills", default="1.0,0.0")
    ap.add_argument("--grid", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    teacher = load_teacher(args.teacher)
    meta = teacher.meta
    images, labels = load_split(meta.dataset, "test")
    images, labels = images[: args.n], np.asarray(labels[: args.n])
    pixels = fit_shape(images, tuple(meta.input_shape)).astype(np.float32) / 255.0
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    def logits(v, x):
        out = teacher.model.apply(v, (x - mean) / std)
        return out[0] if isinstance(out, tuple) else out
    apply = jax.jit(logits)
    predict = lambda x: np.concatenate([np.argmax(np.asarray(apply(teacher.variables, x[i:i + 500])), -1)  # noqa: E731
                                        for i in range(0, x.shape[0], 500)])
    base = predict(pixels)
    k = meta.num_classes
    out = {"n": int(args.n), "teacher_accuracy": float(np.mean(base == labels)), "fills": {}}
    print(f"teacher on {args.n} clean test images: {out['teacher_accuracy']:.4f}")
    x = jnp.asarray(pixels)
    variants = jax.jit(augment_zskd.apply_variants)
    for fill in (float(f) for f in args.fills.split(",")):
        rows, fam = [], {}
        for vi, row in enumerate(augment_zskd.VARIANTS):
            v = jnp.broadcast_to(jnp.asarray(row), (x.shape[0], 4))
            pred = predict(np.asarray(variants(x, v, fill)))
            r = {"variant": vi, "row": [float(t) for t in row], "family": family(row),
                 "accuracy": float(np.mean(pred == labels)), "agree": float(np.mean(pred == base)),
                 "classes": np.bincount(pred, minlength=k).tolist()}
            rows.append(r)
            fam.setdefault(r["family"], []).append(r)
        allc = np.sum([r["classes"] for r in rows], axis=0)
        summary = {"accuracy": float(np.mean([r["accuracy"] for r in rows])),
                   "flip": 1.0 - float(np.mean([r["agree"] for r in rows])),
                   "class_share": (allc / allc.sum()).round(4).tolist(),
                   "families": {f: {"variants": len(rs), "accuracy": float(np.mean([r["accuracy"] for r in rs])),
                                    "flip": 1.0 - float(np.mean([r["agree"] for r in rs])),
                                    "top_class": int(np.argmax(np.sum([r["classes"] for r in rs], 0))),
                                    "top_share": float(np.max(np.sum([r["classes"] for r in rs], 0))
                                                       / (len(rs) * args.n))} for f, rs in fam.items()}}
        out["fills"][str(fill)] = {"summary": summary, "variants": rows}
        print(f"fill {fill}: over the 103 views accuracy {summary['accuracy']:.4f}, label changed on "
              f"{summary['flip']:.4f}; predicted class shares {summary['class_share']}")
        for f, s in summary["families"].items():
            print(f"  {f:24s} {s['variants']:3d} views  accuracy {s['accuracy']:.4f}  changed {s['flip']:.4f}  "
                  f"top class {s['top_class']} ({s['top_share']:.2f})")
    if args.grid:  # one row per (image, fill): the 21 single views (identity, 3 scales, 4 translations, 10 rotations, 3 flips)
        from PIL import Image

        from dfkd_jax.engine import outputs
        single = jnp.asarray(augment_zskd.VARIANTS[:21])
        rows = [np.asarray(augment_zskd.apply_variants(jnp.broadcast_to(x[p], (21, *x.shape[1:])), single, fill))
                for p in (int(np.flatnonzero(labels == c)[0]) for c in (0, 7))
                for fill in (float(f) for f in args.fills.split(","))]
        grid = outputs.image_grid(np.concatenate(rows), 0.0, 1.0, columns=21, scale=2)
        grid.save(args.grid) if isinstance(grid, Image.Image) else None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
