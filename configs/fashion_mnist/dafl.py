"""DAFL on Fashion-MNIST: LeNet-5 teacher -> LeNet-5-half (DAFL variant)."""

from dfkd_jax.config import base_config
from dfkd_jax.methods import dafl


def get_config():
    c = dafl.configure(base_config())
    c.data.dataset = "fashion_mnist"
    c.teacher.arch = "lenet5"
    c.student.arch = "lenet5_half"
    c.generator.nz = 100
    c.generator.ngf = 32
    c.train.batch_size = 256
    c.train.rounds = 2000
    c.train.eval_every = 100
    c.train.log_every = 50
    c.train.checkpoint_every = 250
    c.train.sample_every = 500
    return c
