"""DFAD on Fashion-MNIST: LeNet-5 teacher -> LeNet-5-half (DAFL variant)."""

from dfkd_jax.config import base_config
from dfkd_jax.methods import dfad


def get_config():
    c = dfad.configure(base_config())
    c.data.dataset = "fashion_mnist"
    c.teacher.arch = "lenet5"
    c.student.arch = "lenet5_half"
    c.generator.nz = 100
    c.generator.ngf = 32
    c.student.lr = 0.01
    c.student.weight_decay = 1e-4
    c.train.batch_size = 128
    c.train.rounds = 400
    return c
