"""ZSKD on Fashion-MNIST as published: LeNet-5 teacher -> ZSKD's LeNet-5-half (``lenet5_half_zskd``: conv
widths halved, 120/84 FC kept), 48,000 data impressions (480 batches of 100, 1500 Adam steps each, beta 1.0
and 0.1 for half each), the student by KD at tau 20 with ZSKD's augmentations, Adam 1e-3, batch 64, 500
epochs over the impressions spread over the rounds (dfkd_jax/methods/zskd.py).

At the published counts this is 720,000 synthesis steps: 2.6 h on 2 CPU cores with ``matmul``
(docs/results.md). ``--config.train.rounds`` and
``--config.generator.steps`` shrink it (``student.steps`` is per round; keep epochs by scaling it). On CPU,
``--config.synthesis.conv_impl=matmul`` makes the pixel steps 1.3-1.9x faster (docs/performance.md).

As defined, the student learns while the impressions are made (``student.steps`` per round). The released
order, measured to be much better (docs/results.md, "Where ZSKD's points go": 65.34% from 2,000 impressions
offline against 57.76% online after 2,400), is two runs: synthesis only, exported, then the student from
the stored set, 500 epochs:

    python -m dfkd_jax.main --config configs/fashion_mnist/zskd.py --workdir runs/zskd_syn \
        --config.student.steps=0 --config.synthesis.export=runs/zskd_set [--config.synthesis.conv_impl=matmul]
    python -m dfkd_jax.main --config configs/fashion_mnist/zskd.py --workdir runs/zskd_student \
        --config.synthesis.transfer_set=runs/zskd_set --config.train.rounds=500 --config.student.steps=750 \
        --config.train.eval_every=1

(750 steps of 64 = one epoch of 48,000; ``eval_every=1`` evaluates every epoch, as the released trainer.)
"""

from dfkd_jax.config import base_config
from dfkd_jax.methods import zskd


def get_config():
    c = zskd.configure(base_config())
    c.data.dataset = "fashion_mnist"
    c.teacher.arch = "lenet5"
    c.student.arch = "lenet5_half_zskd"
    c.train.eval_every = 24  # every 2,400 impressions
    c.train.log_every = 8
    c.train.checkpoint_every = 24
    c.train.sample_every = 24
    return c
