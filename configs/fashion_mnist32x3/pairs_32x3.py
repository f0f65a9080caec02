"""The Fashion-MNIST-32x3 pairs and their settings (shared by the method configs in this folder).

``wrn16_2,wrn16_1`` (the default) is sized for 2 CPU cores: the main job trains the teacher when
it is missing (Adam 2e-3, cosine, 2 epochs on 16,384 random training images; 87.68% test
accuracy, docs/models.md), and the round is small (batch 64, generator ngf 16, the student on
the on-device pool). ``resnet34,resnet18`` is the GPU pair of docs/performance.md (teacher
trained for 10 epochs on the full split, GeneratorA ngf 64, batch 256).
"""

PAIRS = ("wrn16_2,wrn16_1", "resnet34,resnet18")


def apply_pair(c, arg: str):
    if arg not in PAIRS:
        raise ValueError(f"Config argument {arg!r}: expected one of {', '.join(PAIRS)}.")
    c.teacher.arch, c.student.arch = arg.split(",")
    c.data.dataset = "fashion_mnist32x3"
    # one generator for every method here: DFAD's GeneratorA (PyTorch's BatchNorm eps and init)
    c.generator.arch, c.generator.bn_eps, c.generator.init = "dafl", 1e-5, "torch"
    c.generator.nz = 256
    c.train.log_every = 10
    if arg == "wrn16_2,wrn16_1":
        c.teacher.epochs = 2
        c.teacher.train_examples = 16384
        c.generator.ngf = 16
        c.student.batch = "pool"
        c.student.pool_size = 8192
        c.train.batch_size = 64
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.sample_every = 20
    else:
        c.teacher.epochs = 10
        c.generator.ngf = 64
        c.train.batch_size = 256
        c.train.rounds = 5000
        c.train.eval_every = 250
        c.train.checkpoint_every = 500
        c.train.sample_every = 1000
    return c
