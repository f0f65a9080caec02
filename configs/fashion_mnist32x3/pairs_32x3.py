"""The Fashion-MNIST-32x3 pairs and their settings (shared by the method configs in this folder).

``wrn16_2,wrn16_1`` (the default) is sized for 2 CPU cores: the main job trains the teacher when
it is missing (Adam 2e-3, cosine, 2 epochs on 16,384 random training images; 87.52% test
accuracy on 2026-12-02; 87.68% from tools/train_teacher.py's run in docs/models.md), and the
round is small (batch 64, generator ngf 16, the student on the on-device pool).
``resnet34,resnet18`` is the GPU pair of docs/performance.md (teacher trained for 10 epochs on the
full split, GeneratorA ngf 64, batch 256).
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


def apply_inversion(c, arg: str = "wrn16_2,wrn16_1"):
    """ADI, CMI and Fast on this dataset's pairs. Both teachers have BatchNorm, which these methods need, so every
    term of their published objectives is on (bn, CMI's contrastive term on the teacher's BN inputs).

    ``wrn16_2,wrn16_1`` is sized for 2 CPU cores like the other methods here: batch 64, the CMI generator at
    ngf 16, 10 student steps per round from the pool, 60 rounds; the synthesis steps per round are shortened
    (ADI 50 instead of 1000-2000, CMI 20 instead of 200, Fast 5) and the pool and bank are smaller; Fast's
    ``reset_l0`` (published on, once at epoch ``120 + warmup``) is off (``synthesis.reset_l0_round = -1``): at
    60 rounds the published reset round (125) is never reached.
    ``resnet34,resnet18`` keeps the methods' published settings (batch 256, ngf 64, their step counts)."""
    method = c.method
    generator_arch, published_steps = c.generator.arch, c.generator.steps
    apply_pair(c, arg)
    if method in ("cmi", "fast"):
        c.generator.arch, c.generator.init = generator_arch, "normal" if method == "cmi" else "torch"
    c.student.batch = "pool"
    c.student.augment = "crop_flip"
    c.student.pool_dtype = "uint8"
    if arg != "wrn16_2,wrn16_1":
        c.generator.steps = published_steps
        c.student.steps = 400
        c.train.rounds = 200 + int(c.synthesis.warmup)
        return c
    c.student.steps = 10
    c.train.rounds = 60
    c.synthesis.batch_size = 64
    c.synthesis.n_neg = 1024
    c.synthesis.bank_size = 4096
    if method == "adi":
        c.generator.steps = 50
    elif method == "cmi":
        c.generator.steps = 20
    elif method == "fast":
        c.generator.steps, c.generator.lr, c.synthesis.lr_z = 5, 3e-3, 0.01
        c.synthesis.warmup = 6
        c.synthesis.reset_l0_round = -1
    return c
