"""Supervised training (dfkd_jax.supervised.train_teacher): a run interrupted after an epoch and rerun
resumes from its epoch checkpoint and ends where an uninterrupted run ends; changed settings are refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from data_fixtures import write_fake_idx_dataset
from dfkd_jax.data import builders
from dfkd_jax.errors import ConfigError
from dfkd_jax.supervised import train_teacher


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_train_teacher_resumes_from_its_epoch_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "SYSTEM_DIRS", {name: () for name in builders.SYSTEM_DIRS})
    write_fake_idx_dataset(tmp_path / "src", n_train=64, n_test=16)
    common = dict(epochs=2, batch_size=16, lr=1e-2, data_dir=str(tmp_path / "tfds"), source_dir=str(tmp_path / "src"),
                  show_progress=False, augment_data=True)
    whole, meta = train_teacher("lenet5_half", "fashion_mnist", log=lambda m: None, **common)

    def stop_in_epoch_2(msg):
        if "epoch 2/2" in msg:  # logged before the epoch's checkpoint: the process dies with epoch 1 saved
            raise Interrupted

    ckpt = str(tmp_path / "epochs")
    with pytest.raises(Interrupted):
        train_teacher("lenet5_half", "fashion_mnist", checkpoint_dir=ckpt, log=stop_in_epoch_2, **common)
    messages = []
    resumed, meta2 = train_teacher("lenet5_half", "fashion_mnist", checkpoint_dir=ckpt, log=messages.append, **common)
    assert any("Resuming after epoch 1" in m for m in messages)
    assert [h["epoch"] for h in meta2.extra["history"]] == [1, 2]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), resumed, whole)
    assert meta2.test_accuracy == meta.test_accuracy
    with pytest.raises(ConfigError, match="lr: 0.01 -> 0.02"):
        train_teacher("lenet5_half", "fashion_mnist", checkpoint_dir=ckpt, log=lambda m: None,
                      **{**common, "lr": 2e-2})
