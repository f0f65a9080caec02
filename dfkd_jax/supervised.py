"""Supervised training of a teacher on a dataset's real training split.

Used by ``tools/train_teacher.py`` and by the main job, which trains and caches the
teacher when the configured checkpoint does not exist. ``label_noise`` replaces that
fraction of the training labels by labels drawn uniformly at random (AdaDFKD's
noisy-teacher study); the replaced label may coincide with the true one.

Segmentation datasets (``spec.task == 'segmentation'``) train on per-pixel
cross-entropy averaged over the pixels that are not ``ignore_label``, and are scored
by mIoU (``dfkd_jax.metrics``). With ``distill_from`` (a ``Teacher``) the network is a
student trained by knowledge distillation on the real training images (the
"KD on real data" baseline): loss ``kd_alpha * tau^2 KL(t || s)`` (per pixel for
segmentation, averaged over pixels and batch) ``+ (1 - kd_alpha) * CE``; the default
``kd_alpha = 1`` uses no labels at all, like the data-free students it is compared with.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from dfkd_jax.errors import ConfigError
from dfkd_jax.progress import progress

from dfkd_jax import data, metrics, terms
from dfkd_jax.data.pipeline import eval_batches, preprocess, train_batches
from dfkd_jax.core import sharding
from dfkd_jax.engine.checkpoint import Checkpoints
from dfkd_jax.core.state import ModelState
from dfkd_jax.models import build_model, is_segmentation
from dfkd_jax.teacher import Teacher, TeacherMeta


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Replace ``fraction`` of ``labels`` (chosen at random) by uniformly random labels."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels, copy=True)
    idx = rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)
    labels[idx] = rng.integers(0, num_classes, size=len(idx))
    return labels


def augment(key, x, y=None, ignore_label: int = 255):
    """Random crop (zero padding 4) and horizontal flip, per sample, on the device.

    With a label map ``y`` (B, H, W) the same crop and flip move it too (padding = ``ignore_label``);
    returns ``x`` alone, or ``(x, y)``.
    """
    b, h, w, _ = x.shape
    k1, k2, k3 = jax.random.split(key, 3)
    dy = jax.random.randint(k1, (b,), 0, 9)
    dx = jax.random.randint(k2, (b,), 0, 9)
    flip = jax.random.bernoulli(k3, 0.5, (b,))

    def move(a, fill):
        a = jnp.pad(a, ((0, 0), (4, 4), (4, 4), (0, 0)), constant_values=fill)
        a = jax.vmap(lambda img, i, j: jax.lax.dynamic_slice(img, (i, j, 0), (h, w, img.shape[-1])))(a, dy, dx)
        return jnp.where(flip[:, None, None, None], a[:, :, ::-1, :], a)

    if y is None:
        return move(x, 0)
    return move(x, 0), move(y[..., None], ignore_label)[..., 0]


def pixel_cross_entropy(logits, labels, ignore_label: int = 255):
    """Mean cross-entropy over the pixels whose label is not ``ignore_label`` (``F.cross_entropy(...,
    ignore_index=255)``); 0 when every pixel is ignored. ``logits`` (B, H, W, K), ``labels`` (B, H, W)."""
    labels = labels.astype(jnp.int32)
    valid = labels != ignore_label
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


def make_train_step(model, tx, augment_data: bool = False, batch_sharding=None, *, ignore_label: int | None = None,
                    teacher=None, teacher_inputs=None, kd_tau: float = 1.0, kd_alpha: float = 1.0):
    """``step(state, x, y, key, t_vars=None) -> (state, loss)``: one supervised update (train-mode BN).

    The loss is the cross-entropy on the labels: per image, or per pixel with ``ignore_label`` set
    (``pixel_cross_entropy``; label maps ``y`` then move with the augmentation's crop and flip).
    With a ``teacher`` (a ``Teacher``; its variables ``t_vars`` passed to each step) the loss is
    Hinton's KD instead: ``kd_alpha * tau^2 KL_tau(t || s) + (1 - kd_alpha) * CE``, per pixel for
    segmentation; ``teacher_inputs=(a, b)`` maps the batch into the teacher's normalisation, ``a x + b``.
    """
    segmentation = ignore_label is not None

    def supervised_loss(logits, y):
        if segmentation:
            return pixel_cross_entropy(logits, y, ignore_label)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    def step(state: ModelState, x, y, key, t_vars=None):
        if augment_data:
            x, y = augment(key, x, y, ignore_label) if ignore_label is not None else (augment(key, x), y)
            if batch_sharding is not None:
                x = jax.lax.with_sharding_constraint(x, batch_sharding)
        t_logits = None
        if teacher is not None:
            x_t = x if teacher_inputs is None else x * teacher_inputs[0] + teacher_inputs[1]
            t_logits = jax.lax.stop_gradient(teacher.model.apply(t_vars, x_t, train=False)[0])

        def loss_fn(params):
            variables = {**state.variables(), "params": params}
            if state.batch_stats:
                (logits, _), upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                stats = upd["batch_stats"]
            else:
                logits, _ = model.apply(variables, x, train=True)
                stats = state.batch_stats
            if teacher is None:
                return supervised_loss(logits, y), stats
            loss = kd_alpha * jnp.mean(terms.kd(logits, t_logits, kd_tau))
            if kd_alpha != 1.0:
                loss = loss + (1.0 - kd_alpha) * supervised_loss(logits, y)
            return loss, stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return ModelState(optax.apply_updates(state.params, updates), stats, opt_state), loss

    return step


def train_teacher(arch: str, dataset: str, *, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                  optimizer: str = "adam", weight_decay: float = 0.0, augment_data: bool = False,
                  label_noise: float = 0.0, train_examples: int = 0, seed: int = 0, data_dir: str | None = None,
                  source_dir: str | None = None, mesh=None, show_progress: bool = True,
                  distill_from: Teacher | None = None, kd_tau: float = 1.0, kd_alpha: float = 1.0,
                  checkpoint_dir: str | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], TeacherMeta]:
    """Train ``arch`` on ``dataset``'s training split; return its variables and metadata (with test accuracy;
    for segmentation the test mIoU and pixel accuracy in ``meta.extra``, ``test_accuracy`` = pixel accuracy).

    ``train_examples`` > 0 trains on that many training examples drawn at random (seeded), for
    CIFAR-shaped teachers on a CPU budget; the test split is always complete. ``distill_from``
    trains by KD from that teacher instead (see the module doc). With ``checkpoint_dir`` the state is
    saved there after every epoch, and a rerun resumes from the last one: each epoch's batch order and
    augmentation keys derive from ``seed`` and the epoch, so a resumed run equals an uninterrupted one.
    """
    log = log or (lambda msg: print(msg, flush=True))
    spec = data.get_spec(dataset)
    segmentation = spec.is_segmentation
    if segmentation != is_segmentation(arch):
        raise ConfigError(f"{arch!r} is a {'segmentation' if is_segmentation(arch) else 'classification'} model "
                          f"but {dataset!r} is a {spec.task} dataset.")
    if segmentation and label_noise:
        raise ConfigError("label_noise is defined for classification datasets only.")
    if distill_from is not None and (distill_from.meta.num_classes != spec.num_classes
                                     or tuple(distill_from.meta.input_shape) != tuple(spec.image_shape)):
        raise ConfigError(f"The KD teacher takes {distill_from.meta.input_shape} inputs with "
                          f"{distill_from.meta.num_classes} classes; {dataset!r} has {spec.image_shape} and "
                          f"{spec.num_classes}.")
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh, "teacher.batch_size")
    train_x, train_y = data.load_split(dataset, "train", data_dir=data_dir or None, source_dir=source_dir or None)
    test_x, test_y = data.load_split(dataset, "test", data_dir=data_dir or None, source_dir=source_dir or None)
    train_x, test_x = preprocess(train_x, spec), preprocess(test_x, spec)
    train_y = train_y if segmentation else train_y.astype(np.int32)
    t_inputs = None
    if distill_from is not None and (distill_from.meta.mean, distill_from.meta.std) != (spec.mean, spec.std):
        t_mean, t_std = np.asarray(distill_from.meta.mean), np.asarray(distill_from.meta.std)
        t_inputs = (jnp.asarray(np.asarray(spec.std) / t_std, jnp.float32),
                    jnp.asarray((np.asarray(spec.mean) - t_mean) / t_std, jnp.float32))
    if train_examples:
        if train_examples > len(train_x):
            raise ConfigError(f"train_examples={train_examples} exceeds the {len(train_x)} training examples.")
        keep = np.sort(np.random.default_rng(seed).choice(len(train_x), train_examples, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]
    if label_noise:
        train_y = noisy_labels(train_y, label_noise, spec.num_classes, seed)
    model = build_model(arch, spec.num_classes)
    steps_per_epoch = len(train_x) // batch_size
    schedule = optax.cosine_decay_schedule(lr, max(epochs * steps_per_epoch, 1))
    if optimizer == "sgd":
        tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=0.9, nesterov=True))
    else:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(schedule))
    repl = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)

    def init():
        v = model.init(jax.random.PRNGKey(seed), jnp.zeros((2, *spec.image_shape)), train=False)
        return ModelState(v["params"], v.get("batch_stats", {}), tx.init(v["params"]))

    state = jax.jit(init, out_shardings=repl)()
    t_vars = None if distill_from is None else sharding.replicate_tree(distill_from.variables, mesh)

    step = jax.jit(make_train_step(model, tx, augment_data, batch_sh,
                                   ignore_label=spec.ignore_label if segmentation else None,
                                   teacher=distill_from, teacher_inputs=t_inputs, kd_tau=kd_tau, kd_alpha=kd_alpha),
                   donate_argnums=(0,))

    @jax.jit
    def score(variables, x, y, mask):
        logits, _ = model.apply(variables, x, train=False)
        if segmentation:
            return metrics.confusion_matrix(logits, y, mask, spec.num_classes, spec.ignore_label)
        return metrics.correct(logits, y, mask)

    def test_scores(state) -> dict[str, float]:
        """{'accuracy'} or {'accuracy' (pixel accuracy), 'miou'}; the sums stay on the device until the end."""
        total: Any = None
        labels = test_y if segmentation else test_y.astype(np.int32)
        bs = (256 if segmentation else 1000) // mesh.devices.size * mesh.devices.size
        for x, y, mask in eval_batches(test_x, labels, max(bs, mesh.devices.size), sharding=batch_sh):
            part = score(state.variables(), x, y, mask)
            total = part if total is None else total + part
        if segmentation:
            seg = metrics.segmentation_scores(jax.device_get(total))
            return {"accuracy": seg["pixel_accuracy"], "miou": seg["miou"]}
        return {"accuracy": float(total) / len(test_x)}

    def describe(scores):
        if segmentation:
            return f"test mIoU {100 * scores['miou']:.2f}%, pixel accuracy {100 * scores['accuracy']:.2f}%"
        return f"test accuracy {100 * scores['accuracy']:.2f}%"

    key = jax.random.PRNGKey(seed + 1)
    history = []  # the test scores after each epoch
    scores = {"accuracy": 0.0}
    first, elapsed = 0, 0.0
    settings = {"arch": arch, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "optimizer": optimizer, "weight_decay": weight_decay, "augment": augment_data,
                "label_noise": label_noise, "train_examples": train_examples, "seed": seed,
                "kd_from": None if distill_from is None else distill_from.meta.arch, "kd_tau": kd_tau,
                "kd_alpha": kd_alpha}
    ckpts = Checkpoints(checkpoint_dir, keep=1) if checkpoint_dir else None
    if ckpts is not None and ckpts.latest() is not None:
        first = int(ckpts.latest() or 0)
        state, record = ckpts.restore(first, state)
        changed = {k: (record["settings"].get(k), v) for k, v in settings.items() if record["settings"].get(k) != v}
        if changed:
            ckpts.close()
            raise ConfigError(f"The epochs saved in {ckpts.directory} were trained with other settings "
                              f"({'; '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}): rerun with "
                              "those, or delete that folder to start again.")
        history, elapsed = record["history"], record["elapsed"]
        scores = {k: v for k, v in history[-1].items() if k not in ("epoch", "seconds")} if history else scores
        log(f"Resuming after epoch {first} from {ckpts.directory}.")
    start = time.time() - elapsed
    try:
        for epoch in range(first, epochs):
            rng = np.random.default_rng((seed, epoch))  # this epoch's batch order
            bar = progress(train_batches(train_x, train_y, batch_size, rng, sharding=batch_sh), total=steps_per_epoch,
                           desc=f"teacher {arch} epoch {epoch + 1}/{epochs}", enabled=show_progress, leave=False)
            losses = []
            for i, (x, y) in enumerate(bar):
                state, loss = step(state, x, y, jax.random.fold_in(key, epoch * steps_per_epoch + i), t_vars)
                losses.append(loss)
                if i >= 2:  # at most 2 steps in flight, so the bar shows the device's progress, not the dispatch's
                    losses[i - 2].block_until_ready()
            scores = test_scores(state)
            history.append({"epoch": epoch + 1, **scores, "seconds": round(time.time() - start, 1)})
            log(f"{'student' if distill_from is not None else 'teacher'} {arch} epoch {epoch + 1}/{epochs}: train loss "
                f"{float(jnp.mean(jnp.stack(losses))):.4f}, {describe(scores)} ({time.time() - start:.0f} s)")
            if ckpts is not None:
                ckpts.save(epoch + 1, state, {"history": history, "elapsed": time.time() - start, "settings": settings})
    finally:  # finish an in-flight save, also when the run stops with an error
        if ckpts is not None:
            ckpts.close()
    variables = jax.device_get(state.variables())
    extra = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
             "label_noise": label_noise, "train_examples": len(train_x), "seed": seed, "augment": augment_data,
             "train_seconds": round(time.time() - start, 1), "history": history}
    if segmentation:
        extra.update(test_miou=scores["miou"], test_pixel_accuracy=scores["accuracy"])
    if distill_from is not None:
        extra.update(distilled_from=distill_from.meta.arch, distilled_from_source=distill_from.meta.source,
                     kd_tau=kd_tau, kd_alpha=kd_alpha)
    meta = TeacherMeta(arch=arch, dataset=dataset, num_classes=spec.num_classes, input_shape=spec.image_shape,
                       mean=spec.mean, std=spec.std, test_accuracy=scores["accuracy"],
                       source="trained by dfkd_jax.supervised.train_teacher"
                              + (" (KD from a teacher)" if distill_from is not None else ""), extra=extra)
    return variables, meta
