"""Evaluate checkpoints on a dataset's real test split.

    python -m dfkd_jax.evaluate CKPT [--against CKPT2] [--dataset NAME] [--json PATH]

CKPT is a teacher folder (``teacher.json`` + ``variables/``: trained by
tools/train_teacher.py or converted by tools/convert_torch_checkpoint.py) or a run's
workdir (its ``config.json`` names the student; the latest checkpoint is used).
With ``--against`` (usually the teacher), it also reports Agree@1 (top-1 agreement)
and probability loyalty (mean of 1 - sqrt(JS) between the two softmax outputs,
AdaDFKD), with CKPT as the student and CKPT2 as the reference.

Segmentation models (on a segmentation dataset) are scored by mIoU and pixel accuracy
from a confusion matrix summed on the device (pixels labelled ``ignore_label`` left
out); with ``--against``, Agree@1 is per pixel and there is no loyalty.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dfkd_jax import data, metrics
from dfkd_jax.data.pipeline import eval_batches, preprocess
from dfkd_jax.core import sharding
from dfkd_jax.models import build_model, is_segmentation
from dfkd_jax.teacher import Teacher, TeacherMeta, is_teacher_dir, load_teacher


_confusion = jax.jit(metrics.confusion_matrix, static_argnums=(3, 4))
_pixel_agreement = jax.jit(metrics.pixel_agreement)


def load_classifier(path: str) -> Teacher:
    """A teacher folder, or the student of a run's workdir, as ``Teacher(model, variables, meta)``."""
    path = os.path.abspath(path)
    if is_teacher_dir(path):
        return load_teacher(path)
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path} is neither a teacher folder (teacher.json + variables/) nor a run "
                                "workdir (config.json + checkpoints/).")
    with open(config_file) as f:
        config = json.load(f)
    from dfkd_jax.engine.checkpoint import Checkpoints
    ckpts = Checkpoints(os.path.join(path, "checkpoints"))
    step = ckpts.latest()
    if step is None:
        raise FileNotFoundError(f"The run in {path} has no checkpoint yet.")
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(os.path.join(ckpts.directory, str(step), "state"))
    ckpts.close()
    from dfkd_jax.obtain import teacher_path
    teacher_meta_file = os.path.join(teacher_path(ml_collections.ConfigDict(config)), "teacher.json")
    spec = data.get_spec(config["data"]["dataset"])
    mean, std = spec.mean, spec.std
    if os.path.isfile(teacher_meta_file):  # the student sees what its teacher saw
        with open(teacher_meta_file) as f:
            tmeta = TeacherMeta.from_json(json.load(f))
        mean, std = tmeta.mean, tmeta.std
    student = state["student"]
    variables = {"params": student["params"]}
    if student.get("batch_stats"):
        variables["batch_stats"] = student["batch_stats"]
    arch = config["student"]["arch"]
    meta = TeacherMeta(arch=arch, dataset=spec.name, num_classes=spec.num_classes, input_shape=spec.image_shape,
                       mean=mean, std=std, source=f"student of {path} at round {step}")
    return Teacher(build_model(arch, spec.num_classes), variables, meta)


def evaluate(model: Teacher, dataset: str | None = None, against: Teacher | None = None, *,
             batch_size: int = 1000, data_dir: str | None = None, source_dir: str | None = None) -> dict:
    """Accuracy of ``model`` (and of ``against``, with Agree@1 and loyalty) on the test split; for a
    segmentation dataset mIoU and pixel accuracy (and per-pixel Agree@1)."""
    dataset = dataset or model.meta.dataset
    spec = data.get_spec(dataset)
    for m in [model] + ([against] if against is not None else []):
        if is_segmentation(m.meta.arch) != spec.is_segmentation:
            raise ValueError(f"{m.meta.arch} is a {'segmentation' if is_segmentation(m.meta.arch) else 'classification'}"
                             f" model but {dataset!r} is a {spec.task} dataset; pass the dataset it was trained on.")
    if spec.is_segmentation:
        batch_size = min(batch_size, 100)  # per-pixel logits: smaller batches
    images, labels = data.load_split(dataset, "test", data_dir=data_dir, source_dir=source_dir)
    mesh = sharding.make_mesh()
    batch_size = max(mesh.devices.size, batch_size - batch_size % mesh.devices.size)

    def inputs(m: Teacher):
        return preprocess(images, dataclasses.replace(spec, mean=m.meta.mean, std=m.meta.std))

    models = [model] + ([against] if against is not None else [])
    fns = [jax.jit(lambda v, x, m=m: m.model.apply(v, x, train=False)[0]) for m in models]
    variables = [sharding.replicate_tree(m.variables, mesh) for m in models]
    y_all = labels if spec.is_segmentation else labels.astype(np.int32)
    # one batch stream per model (each sees its own normalisation); the same rows in the same order
    streams = [eval_batches(inputs(m), y_all, batch_size, sharding=sharding.batch_sharding(mesh)) for m in models]
    totals = None
    for batches in zip(*streams):
        _, y, mask = batches[0]
        outs = [fn(v, x) for fn, v, (x, _, _) in zip(fns, variables, batches)]
        if spec.is_segmentation:
            part = {"confusion": _confusion(outs[0], y, mask, spec.num_classes, spec.ignore_label),
                    "count": jnp.sum(mask)}
            if against is not None:
                part.update(reference_confusion=_confusion(outs[1], y, mask, spec.num_classes, spec.ignore_label),
                            agree=_pixel_agreement(outs[0], outs[1], mask))
        else:
            part = {"correct": metrics.correct(outs[0], y, mask), "count": jnp.sum(mask)}
        if against is not None and not spec.is_segmentation:
            part.update(reference_correct=metrics.correct(outs[1], y, mask),
                        agree=metrics.agreement(outs[0], outs[1], mask),
                        loyalty=metrics.loyalty(outs[0], outs[1], mask))
        totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
    totals = jax.device_get(totals)
    if spec.is_segmentation:
        n = float(totals["count"])
        own = metrics.segmentation_scores(totals["confusion"])
        result = {"dataset": dataset, "examples": int(n), "arch": model.meta.arch, "task": "segmentation",
                  "miou": own["miou"], "pixel_accuracy": own["pixel_accuracy"], "iou": own["iou"]}
        if against is not None:
            ref = metrics.segmentation_scores(totals["reference_confusion"])
            result.update(reference_arch=against.meta.arch, reference_miou=ref["miou"],
                          reference_pixel_accuracy=ref["pixel_accuracy"], agree=float(totals["agree"]) / n)
        return result
    totals = {k: float(v) for k, v in totals.items()}
    n = totals.pop("count")
    result = {"dataset": dataset, "examples": int(n), "arch": model.meta.arch, "accuracy": totals["correct"] / n}
    if against is not None:
        result.update(reference_arch=against.meta.arch, reference_accuracy=totals["reference_correct"] / n,
                      agree=totals["agree"] / n, loyalty=totals["loyalty"] / n)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="teacher folder or run workdir")
    p.add_argument("--against", help="a second checkpoint (e.g. the teacher): Agree@1 and loyalty")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--source_dir", default=None)
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    from dfkd_jax.errors import UserError
    from dfkd_jax.main import enable_compilation_cache
    enable_compilation_cache()
    try:
        model = load_classifier(args.checkpoint)
        against = load_classifier(args.against) if args.against else None
        result = evaluate(model, args.dataset, against, batch_size=args.batch_size, data_dir=args.data_dir,
                          source_dir=args.source_dir)
    except (UserError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if result.get("task") == "segmentation":
        print(f"{result['arch']} on {result['dataset']} test ({result['examples']} images): "
              f"mIoU {100 * result['miou']:.2f}%, pixel accuracy {100 * result['pixel_accuracy']:.2f}%")
        if against is not None:
            print(f"{result['reference_arch']} (reference): mIoU {100 * result['reference_miou']:.2f}%, pixel accuracy "
                  f"{100 * result['reference_pixel_accuracy']:.2f}%; per-pixel agreement {100 * result['agree']:.2f}%")
    else:
        print(f"{result['arch']} on {result['dataset']} test ({result['examples']} images): "
              f"accuracy {100 * result['accuracy']:.2f}%")
    if against is not None and result.get("task") != "segmentation":
        print(f"{result['reference_arch']} (reference): accuracy {100 * result['reference_accuracy']:.2f}%; "
              f"Agree@1 {100 * result['agree']:.2f}%; probability loyalty {result['loyalty']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
