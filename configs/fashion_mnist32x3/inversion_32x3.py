"""ADI, CMI and Fast on the Fashion-MNIST-32x3 WRN-16-2 -> WRN-16-1 pair (pairs_32x3.py): the BN teacher
these methods need, so every term of their published objectives is on (bn, CMI's contrastive term on the
teacher's BN inputs). Sized for 2 CPU cores like the other methods of this folder: batch 64, the CMI
generator at ngf 16, 10 student steps per round from the pool, 60 rounds; the synthesis steps per round
are shortened (ADI 50 instead of 1000-2000, CMI 20 instead of 200, Fast its published 5) and run as a
Python loop over one jitted step (``synthesis.loop='python'``) where they are many.
"""


def apply_inversion(c):
    method = c.method
    from pairs_32x3 import apply_pair
    apply_pair(c, "wrn16_2,wrn16_1")
    if method in ("cmi", "fast"):
        c.generator.arch, c.generator.init = "cmi", "normal" if method == "cmi" else "torch"
    c.student.batch = "pool"
    c.student.augment = "crop_flip"
    c.student.pool_dtype = "uint8"
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
        c.synthesis.warmup = 6
        c.synthesis.reset_l0_round = -1
    return c
