"""The embedded default run: data-free distillation of a LeNet-5 Fashion-MNIST teacher into
LeNet-5-half on 2 CPU cores in about 15 minutes, teacher training included.

It is the method config that reached the highest accuracy in that budget (docs/fashion_mnist.md,
"Acceptance run"), at the number of rounds that fits the budget; this file only points at it, so
the two cannot drift apart. AdaDFKD's schedules (adversarial ramp, R2M band, self-paced lambda)
follow ``train.rounds``, so the shorter run keeps the method's curriculum whole.
"""

import importlib.util
import os

DEFAULT = "adadfkd.py"
ROUNDS = 180  # ~3.4 s a round on 2 cores + ~200 s of teacher training: about 15 minutes


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT)
    spec = importlib.util.spec_from_file_location("dfkd_jax_default_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.train.rounds = ROUNDS
    return config
