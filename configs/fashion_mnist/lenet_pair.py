"""The Fashion-MNIST LeNet-5 -> LeNet-5-half pair and the project's 2-CPU-core settings.

Shared by the method configs in this folder (configs as code: each method file calls
``apply`` after its method's ``configure``). What it sets, and why (docs/fashion_mnist.md):
- the LeNet-5 teacher the main job trains and caches, and the DAFL-variant half student;
- one generator for every method: DFAD's GeneratorA (``dafl``, PyTorch's BatchNorm eps and
  init) at ngf 8, nz 100: on XLA:CPU the generator's convolutions are nearly the whole cost
  of a round. A method's own generator (ZSKT's, DFQ's LargeGenerator, CuDFKD's DCGAN, DAFL's
  eps 0.8) is replaced by it; its BatchNorm modes (``generator.student_mode``) are kept;
- the student learns from the on-device pool of the last 16,384 synthetic samples, 20
  updates per generator update: student updates are cheap and samples are not;
- 420 rounds, about 15 minutes on 2 cores.
The LeNet-5 teacher has no BatchNorm, so methods with the bn term drop it here.
"""


def apply(c, rounds: int = 420):
    c.data.dataset = "fashion_mnist"
    c.teacher.arch = "lenet5"
    c.student.arch = "lenet5_half"
    c.generator.arch = "dafl"
    c.generator.bn_eps = 1e-5
    c.generator.init = "torch"
    c.generator.nz = 100
    c.generator.ngf = 8
    c.student.batch = "pool"
    c.student.pool_size = 16384
    c.student.steps = 20
    c.train.batch_size = 256
    c.train.rounds = rounds
    c.train.eval_every = 30
    c.train.log_every = 25
    c.train.checkpoint_every = 60
    c.train.sample_every = 60
    if "bn" in c.generator.terms:
        del c.generator.terms["bn"]
    return c
