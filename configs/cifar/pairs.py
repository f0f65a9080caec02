"""Teacher/student pairs of the CIFAR benchmarks and how a config argument names them.

``--config configs/cifar/dfad.py:cifar10,r34_r18`` selects CIFAR-10 and ResNet-34 -> ResNet-18.
Teachers are read from ``teachers/<dataset>_<arch>`` (convert the CMI/Fast or DFAD zoo
checkpoints with tools/convert_torch_checkpoint.py) unless --config.teacher.checkpoint says
otherwise; they are never trained implicitly at this size.
"""

from dfkd_jax.errors import ConfigError

PAIRS = {
    "r34_r18": ("resnet34", "resnet18"),
    "vgg11_r18": ("vgg11", "resnet18"),
    "w40_2_w16_1": ("wrn40_2", "wrn16_1"),
    "w40_2_w40_1": ("wrn40_2", "wrn40_1"),
    "w40_2_w16_2": ("wrn40_2", "wrn16_2"),
}
DATASETS = ("cifar10", "cifar100")


def parse_pair(arg: str) -> tuple[str, str]:
    """``(dataset, pair)`` named by a config argument ``DATASET,PAIR`` (default ``cifar10,r34_r18``)."""
    dataset, _, pair = (arg or "cifar10,r34_r18").partition(",")
    pair = pair or "r34_r18"
    if dataset not in DATASETS or pair not in PAIRS:
        raise ConfigError(f"Config argument {arg!r}: expected DATASET,PAIR with DATASET in {DATASETS} and PAIR in "
                         f"{sorted(PAIRS)}, e.g. configs/cifar/dfad.py:cifar10,r34_r18")
    return dataset, pair


def published_recipe(recipes: dict, arg: str, method: str) -> dict:
    """The entry of ``recipes`` (keyed by ``(dataset, pair)``) that ``arg`` names; a pair the authors
    published no script for is refused, naming the pairs that have one."""
    key = parse_pair(arg)
    if key not in recipes:
        have = ", ".join(f"{d},{p}" for d, p in recipes)
        raise ConfigError(f"{method}: the authors published no script for {key[0]},{key[1]} (PAIR {key[1]} = "
                         f"{' -> '.join(PAIRS[key[1]])}), so there are no published settings to run. Pairs with a "
                         f"script: {have}. For another pair, start from one of these and set its values with "
                         "--config.* overrides.")
    return recipes[key]


def apply_pair(config, arg: str):
    dataset, pair = parse_pair(arg)
    teacher, student = PAIRS[pair]
    config.data.dataset = dataset
    config.teacher.arch, config.student.arch = teacher, student
    config.teacher.checkpoint = f"teachers/{dataset}_{teacher}"
    config.teacher.train_if_missing = False
    config.data.eval_batch_size = 500
    return config
