"""Supervised training of a teacher on a dataset's real training split.

Used by ``tools/train_teacher.py`` and by the main job, which trains and caches the
teacher when the configured checkpoint does not exist. ``label_noise`` replaces that
fraction of the training labels by labels drawn uniformly at random (AdaDFKD's
noisy-teacher study); the replaced label may coincide with the true one.
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

from dfkd_jax import data
from dfkd_jax.data.pipeline import preprocess, train_batches
from dfkd_jax.engine import sharding
from dfkd_jax.engine.state import ModelState
from dfkd_jax.models import build_model
from dfkd_jax.teacher import TeacherMeta


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Replace ``fraction`` of ``labels`` (chosen at random) by uniformly random labels."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels, copy=True)
    idx = rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)
    labels[idx] = rng.integers(0, num_classes, size=len(idx))
    return labels


def augment(key, x):
    """Random crop (zero padding 4) and horizontal flip, per sample, on the device."""
    b, h, w, _ = x.shape
    k1, k2, k3 = jax.random.split(key, 3)
    padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy = jax.random.randint(k1, (b,), 0, 9)
    dx = jax.random.randint(k2, (b,), 0, 9)
    crop = jax.vmap(lambda img, i, j: jax.lax.dynamic_slice(img, (i, j, 0), (h, w, img.shape[-1])))(padded, dy, dx)
    flip = jax.random.bernoulli(k3, 0.5, (b, 1, 1, 1))
    return jnp.where(flip, crop[:, :, ::-1, :], crop)


def make_train_step(model, tx, augment_data: bool = False, batch_sharding=None):
    """``step(state, x, y, key) -> (state, loss)``: one supervised update (cross-entropy, train-mode BN)."""

    def step(state: ModelState, x, y, key):
        if augment_data:
            x = augment(key, x)
            if batch_sharding is not None:
                x = jax.lax.with_sharding_constraint(x, batch_sharding)

        def loss_fn(params):
            variables = {**state.variables(), "params": params}
            if state.batch_stats:
                (logits, _), upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                stats = upd["batch_stats"]
            else:
                logits, _ = model.apply(variables, x, train=True)
                stats = state.batch_stats
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
            return loss, stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return ModelState(optax.apply_updates(state.params, updates), stats, opt_state), loss

    return step


def train_teacher(arch: str, dataset: str, *, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                  optimizer: str = "adam", weight_decay: float = 0.0, augment_data: bool = False,
                  label_noise: float = 0.0, train_examples: int = 0, seed: int = 0, data_dir: str | None = None,
                  source_dir: str | None = None, mesh=None, show_progress: bool = True,
                  log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], TeacherMeta]:
    """Train ``arch`` on ``dataset``'s training split; return its variables and metadata (with test accuracy).

    ``train_examples`` > 0 trains on that many training examples drawn at random (seeded), for
    CIFAR-shaped teachers on a CPU budget; the test split is always complete.
    """
    log = log or (lambda msg: print(msg, flush=True))
    spec = data.get_spec(dataset)
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh, "teacher.batch_size")
    train_x, train_y = data.load_split(dataset, "train", data_dir=data_dir or None, source_dir=source_dir or None)
    test_x, test_y = data.load_split(dataset, "test", data_dir=data_dir or None, source_dir=source_dir or None)
    train_x, test_x = preprocess(train_x, spec), preprocess(test_x, spec)
    train_y = train_y.astype(np.int32)
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

    step = jax.jit(make_train_step(model, tx, augment_data, batch_sh), donate_argnums=(0,))

    @jax.jit
    def correct(variables, x, y, mask):
        logits, _ = model.apply(variables, x, train=False)
        return jnp.sum((jnp.argmax(logits, -1) == y) * mask)

    def test_accuracy(state):
        from dfkd_jax.data.pipeline import eval_batches
        total = 0.0
        for x, y, mask in eval_batches(test_x, test_y.astype(np.int32), 1000 - 1000 % mesh.devices.size,
                                       sharding=batch_sh):
            total += float(correct(state.variables(), x, y, mask))
        return total / len(test_x)

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed + 1)
    start = time.time()
    acc = 0.0
    for epoch in range(epochs):
        bar = progress(train_batches(train_x, train_y, batch_size, rng, sharding=batch_sh), total=steps_per_epoch,
                       desc=f"teacher {arch} epoch {epoch + 1}/{epochs}", enabled=show_progress, leave=False)
        losses = []
        for i, (x, y) in enumerate(bar):
            state, loss = step(state, x, y, jax.random.fold_in(key, epoch * steps_per_epoch + i))
            losses.append(loss)
            if i >= 2:  # at most 2 steps in flight, so the bar shows the device's progress, not the dispatch's
                losses[i - 2].block_until_ready()
        acc = test_accuracy(state)
        log(f"teacher {arch} epoch {epoch + 1}/{epochs}: train loss {float(jnp.mean(jnp.stack(losses))):.4f}, "
            f"test accuracy {100 * acc:.2f}% ({time.time() - start:.0f} s)")
    variables = jax.device_get(state.variables())
    meta = TeacherMeta(arch=arch, dataset=dataset, num_classes=spec.num_classes, input_shape=spec.image_shape,
                       mean=spec.mean, std=spec.std, test_accuracy=acc,
                       source="trained by dfkd_jax.supervised.train_teacher",
                       extra={"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                              "label_noise": label_noise, "train_examples": len(train_x), "seed": seed, "augment": augment_data,
                              "train_seconds": round(time.time() - start, 1)})
    return variables, meta
