"""DFAD on Fashion-MNIST-32x3 (Fashion-MNIST padded to 32x32, three channels): CIFAR-shaped
networks distilled on real data that these machines have.

``--config configs/fashion_mnist32x3/dfad.py`` is the small pair WRN-16-2 -> WRN-16-1 sized
for 2 CPU cores: the main job trains the teacher when it is missing (Adam 2e-3, cosine,
2 epochs on 16,384 random training images, ~10 minutes on CPU; test accuracy in
docs/models.md), then distils with DFAD's objectives (generator -L1(s, t), student L1(s, t);
student SGD 0.1, momentum 0.9, wd 5e-4; generator Adam 1e-3; x0.1 at 20% and 40%)
with the CPU adaptations of configs/fashion_mnist (a small generator, the student on the
on-device pool). ``:resnet34,resnet18`` selects the GPU pair of docs/performance.md
(teacher trained for 10 epochs on the full split, GeneratorA ngf 64, batch 256, 5 fresh
batches per round as published).
"""

from dfkd_jax.config import base_config
from dfkd_jax.methods import dfad

PAIRS = {"wrn16_2,wrn16_1", "resnet34,resnet18"}


def get_config(arg="wrn16_2,wrn16_1"):
    if arg not in PAIRS:
        raise ValueError(f"Config argument {arg!r}: expected one of {sorted(PAIRS)}.")
    teacher, student = arg.split(",")
    c = dfad.configure(base_config())
    c.data.dataset = "fashion_mnist32x3"
    c.teacher.arch, c.student.arch = teacher, student
    c.generator.nz = 256
    if arg == "wrn16_2,wrn16_1":
        c.teacher.epochs = 2
        c.teacher.train_examples = 16384
        c.generator.ngf = 16
        c.student.batch = "pool"
        c.student.pool_size = 8192
        c.student.steps = 5
        c.train.batch_size = 128
        c.train.rounds = 120
        c.train.eval_every = 20
        c.train.checkpoint_every = 20
        c.train.sample_every = 40
    else:
        c.teacher.epochs = 10
        c.generator.ngf = 64
        c.train.batch_size = 256
        c.train.rounds = 5000
        c.train.eval_every = 250
        c.train.checkpoint_every = 500
        c.train.sample_every = 1000
    c.train.log_every = 10
    return c
