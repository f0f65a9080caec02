#!/usr/bin/env python
"""Run an authors' released training script on the same teacher, data and budget as a dfkd_jax run.

    python tools/reference_run.py dfad_mnist --checkout /tmp/dfad --commit c161591 \\
        --config configs/fashion_mnist/dfad.py --set student.batch=fresh --set student.steps=5 \\
        --teacher ~/.cache/dfkd_jax/teachers/fashion_mnist_lenet5_e10 --seed 1 --workdir runs/ref_dfad_s1 \\
        --torchvision /tmp/torchvision-0.28.0-unpacked

The checkout is the user's (the authors' repository at a commit; nothing of it is copied into
dfkd_jax). The driver, for the recipe named first (``RECIPES``):
1. writes the dataset of the config (Fashion-MNIST at the 32x32 the teacher takes, zero-padded as
   dfkd_jax pads it) in the on-disk format the script's loader reads (MNIST's IDX files for
   ``DFAD_mnist.py``) under ``WORKDIR/data``, and the teacher (a dfkd_jax teacher folder) as a PyTorch
   checkpoint in the script's zoo layout (``dfkd_jax.convert.export``) as ``WORKDIR/teacher.pt``;
2. translates the config's budget (rounds, evaluation interval, batch, generator width and latent
   size, student steps, learning rates, weight decay) into the script's flags, and patches the script
   at run time, in memory, only where it has no flag (listed per recipe and written to
   ``WORKDIR/reference.json``), where it assumes a GPU or a download, and where its loader normalises
   with other constants than the teacher was trained with. A config the script cannot express (a
   sample pool, a learning-rate schedule it has no form of) is refused with the key to change;
3. runs the script in a child process (``WORKDIR`` as its working directory, one thread pool as a
   dfkd_jax run has), keeps its output in ``WORKDIR/reference.log``, and writes each evaluation it
   prints as a dfkd_jax ``metrics.jsonl`` record (``round``, ``accuracy``, ``wall_time_s`` since the
   script's training began), so ``tools/compare_runs.py`` plots both sides.

torchvision: the scripts import it; where its compiled operators do not load (the CPU torch build
of these machines), ``--torchvision DIR`` names an unpacked torchvision wheel whose pure-Python
``datasets`` and ``transforms`` modules are used without its package ``__init__`` (which loads them).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.abc
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from dfkd_jax.errors import ConfigError  # noqa: E402

Patch = tuple[str, str, int]  # (text, replacement, how many times the text must occur)


# ---------------------------------------------------------------------------------------------
# Datasets in the scripts' on-disk formats


def write_mnist_idx(root: str, splits: dict[str, tuple[Any, Any]]) -> str:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed, as torchvision's ``MNIST``
    reads them) from ``{'train': (images, labels), 'test': (...)}``, images uint8 (N, H, W[, 1])."""
    import numpy as np

    from dfkd_jax.data.idx import write_idx

    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        images = np.asarray(images, np.uint8)
        if images.ndim == 4:
            if images.shape[-1] != 1:
                raise ValueError(f"MNIST files hold grey images, not {images.shape[-1]} channels.")
            images = images[..., 0]
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images, compress=False)
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), np.asarray(labels, np.uint8), compress=False)
    return raw


def write_cifar10_pickles(root: str, splits: dict[str, tuple[Any, Any]], class_names=()) -> str:
    """``root/cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``): pickled dicts of
    (N, 3072) uint8 CHW rows and label lists, the layout torchvision's ``CIFAR10`` reads."""
    import pickle

    import numpy as np

    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)

    def dump(name, images, labels):
        images = np.asarray(images, np.uint8)
        if images.shape[1:] != (32, 32, 3):
            raise ValueError(f"CIFAR-10 files hold 32x32x3 images, not {images.shape[1:]}.")
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                         b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))]}, f)

    images, labels = splits["train"]
    for i, part in enumerate(np.array_split(np.arange(len(images)), 5)):
        dump(f"data_batch_{i + 1}", images[part], np.asarray(labels)[part])
    dump("test_batch", *splits["test"])
    names = list(class_names) or [f"class_{k}" for k in range(10)]
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_cases_per_batch": len(images) // 5,
                     b"num_vis": 3072}, f)
    return folder


def dataset_splits(dataset: str) -> dict[str, tuple[Any, Any]]:
    """The config's dataset as uint8 NHWC at the teacher's input size (zero-padded as dfkd_jax pads it)."""
    from dfkd_jax.data import get_spec, load_split
    from dfkd_jax.data.pipeline import fit_shape

    spec = get_spec(dataset)
    return {split: (fit_shape(x, spec.image_shape), y) for split, (x, y) in
            ((s, load_split(dataset, s)) for s in ("train", "test"))}


# ---------------------------------------------------------------------------------------------
# Recipes: one per released script


@dataclasses.dataclass
class Recipe:
    script: str  # path inside the checkout
    zoo: str  # dfkd_jax.convert.export zoo of the teacher file
    data_format: str  # 'mnist_idx' or 'cifar10_pickle'
    flags: Callable[[Any, int, dict], list[str]]  # (config, seed, paths) -> argv
    patches: Callable[[Any, Any], dict[str, list[Patch]]]  # (config, teacher meta) -> {file: patches}
    evaluation: re.Pattern  # one printed evaluation: groups 'epoch' and 'accuracy' (a fraction or %)
    start: re.Pattern  # the line after which training begins (the clock's zero)
    round_of: Callable[[Any, int], int]  # (config, epoch) -> round
    check: Callable[[Any], None]  # refuse a config the script cannot express
    percent: bool = True
    stubs: tuple[str, ...] = ()  # modules the script imports but never uses in this run, stubbed when missing
    # diagnostic variants (--variant NAME): further patches that change the algorithm, to find the cause of a gap
    variants: dict[str, Callable[[Any], dict[str, list[Patch]]]] = dataclasses.field(default_factory=dict)


def _require(config, wanted: dict[str, Any], why: str) -> None:
    for key, value in wanted.items():
        node = config
        for part in key.split("."):
            node = node[part]
        if node != value:
            raise ConfigError(f"config.{key} is {node!r}, but {why}; run both sides with --set {key}={value!r}.")


def _dfad_check(c) -> None:
    _require(c, {"method": "dfad", "student.batch": "fresh", "generator.steps": 1, "student.schedule": "constant",
                 "generator.schedule": "constant", "student.optimizer": "sgd", "generator.optimizer": "adam",
                 "student.momentum": 0.9, "generator.arch": "dafl", "student.arch": "lenet5_half",
                 "teacher.arch": "lenet5"},
             "DFAD_mnist.py trains LeNet-5 -> LeNet-5-half with GeneratorA, fresh batches, SGD (momentum 0.9) and "
             "Adam at constant learning rates (its --scheduler is a StepLR with another form)")
    if int(c.train.rounds) % int(c.train.eval_every):
        raise ConfigError("DFAD_mnist.py evaluates once per epoch: train.rounds must be a multiple of "
                          "train.eval_every (the epoch's iterations).")


def _dfad_flags(c, seed: int, paths: dict) -> list[str]:
    return ["--batch_size", str(int(c.train.batch_size)), "--epochs", str(int(c.train.rounds) // int(c.train.eval_every)),
            "--epoch_itrs", str(int(c.train.eval_every)), "--lr_S", repr(float(c.student.lr)),
            "--lr_G", repr(float(c.generator.lr)), "--weight_decay", repr(float(c.student.weight_decay)),
            "--nz", str(int(c.generator.nz)), "--data_root", paths["data"], "--ckpt", paths["teacher"],
            "--seed", str(seed), "--test_batch_size", "1000"]


def _dfad_patches(c, meta) -> dict[str, list[Patch]]:
    mean, std = float(meta.mean[0]), float(meta.std[0])
    return {
        # no flag for the generator's width (GeneratorA's default ngf is 64) nor the student steps per iteration
        "DFAD_mnist.py": [
            ("generator = network.gan.GeneratorA(nz=args.nz, nc=1, img_size=32)",
             f"generator = network.gan.GeneratorA(nz=args.nz, ngf={int(c.generator.ngf)}, nc=1, img_size=32)", 1),
            ("for k in range(5):", f"for k in range({int(c.student.steps)}):", 1),
        ],
        # MNIST's constants -> the teacher's (it was trained on Fashion-MNIST normalised with these)
        "dataloader.py": [("transforms.Normalize((0.1307,), (0.3081,))",
                           f"transforms.Normalize(({mean!r},), ({std!r},))", 2)],
    }


def _dfad_generator_first(c) -> dict[str, list[Patch]]:
    """dfkd_jax's order inside an iteration (the generator's update, then the student's): the script's
    order (student's, then generator's) with the first iteration's student updates skipped; at every
    evaluation the two orders have made the same updates but the last iteration's student updates."""
    steps = int(c.student.steps)
    return {"DFAD_mnist.py": [(f"for k in range({steps}):", f"for k in range({steps} if (epoch, i) != (1, 0) else 0):", 1)]}


RECIPES: dict[str, Recipe] = {
    "dfad_mnist": Recipe(
        script="DFAD_mnist.py", zoo="dfad", data_format="mnist_idx", flags=_dfad_flags, patches=_dfad_patches,
        evaluation=re.compile(r"Epoch (?P<epoch>\d+) Test set: .*Accuracy: \d+/\d+ \((?P<accuracy>[\d.]+)%\)"),
        start=re.compile(r"^Teacher restored from"), round_of=lambda c, e: e * int(c.train.eval_every),
        # utils/visualizer.py imports visdom (a live-plot server) at import time; the MNIST run never plots
        check=_dfad_check, stubs=("visdom",), variants={"generator_first": _dfad_generator_first}),
}


# ---------------------------------------------------------------------------------------------
# The child process: the script with its patches applied in memory


def apply_patches(source: str, patches: list[Patch], name: str) -> str:
    for old, new, count in patches:
        found = source.count(old)
        if found != count:
            raise ConfigError(f"{name}: expected {count} occurrence(s) of {old!r}, found {found}: the checkout is "
                              "not the version this recipe was written for (reference.json names it).")
        source = source.replace(old, new)
    return source


class _PatchedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the checkout's modules named in ``patches`` from their patched source."""

    def __init__(self, checkout: str, patches: dict[str, list[Patch]]):
        self.checkout = checkout
        self.modules = {os.path.splitext(f)[0].replace("/", "."): f for f in patches}
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        if name not in self.modules:
            return None
        return importlib.util.spec_from_file_location(name, os.path.join(self.checkout, self.modules[name]),
                                                      loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        rel = self.modules[module.__name__]
        with open(os.path.join(self.checkout, rel)) as f:
            source = apply_patches(f.read(), self.patches[rel], rel)
        exec(compile(source, module.__file__, "exec"), module.__dict__)


def install_torchvision(folder: str) -> None:
    """Register ``torchvision`` and its ``datasets``, ``transforms``, ``models`` and ``models.segmentation``
    as bare packages over an unpacked wheel (``torchvision_stub``), with the names the scripts use
    (``datasets.MNIST``, ``transforms.Compose``...) and ``torchvision.models.utils.load_state_dict_from_url``
    (the name torchvision had before 0.13) for scripts written against it."""
    import importlib

    from torchvision_stub import load_torchvision

    try:
        load_torchvision(folder, extra=("torchvision.datasets", "torchvision.transforms"))
    except FileNotFoundError as e:
        raise ConfigError(f"--torchvision {folder}: {e}") from None
    tv = sys.modules["torchvision"]
    for package, modules in (("datasets", ("mnist", "cifar")), ("transforms", ("transforms",))):
        for m in modules:
            loaded = importlib.import_module(f"torchvision.{package}.{m}")
            for attr in getattr(loaded, "__all__", [a for a in dir(loaded) if a[:1].isupper()]):
                setattr(getattr(tv, package), attr, getattr(loaded, attr))


def install_stub(name: str) -> None:
    """An importable ``name`` whose every attribute is a class that refuses to be built (the run never uses it)."""
    import importlib.util
    import types

    if importlib.util.find_spec(name) is not None:
        return

    class Stub(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)

            def refuse(*args, **kwargs):
                raise RuntimeError(f"{name}.{attr} is a stub of tools/reference_run.py: install {name} to use it.")
            return type(attr, (), {"__init__": refuse})

    sys.modules[name] = Stub(name)


def child(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    checkout, script = spec["checkout"], spec["script"]
    if spec.get("torchvision"):
        install_torchvision(spec["torchvision"])
    for name in spec.get("stubs", ()):
        install_stub(name)
    import torch

    torch.cuda.is_available = lambda: False  # a CPU run: scripts that pick CUDA when it is there pick the CPU
    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    patches = {k: [tuple(p) for p in v] for k, v in spec["patches"].items()}
    sys.meta_path.insert(0, _PatchedModules(checkout, {k: v for k, v in patches.items() if k != script}))
    sys.path.insert(0, checkout)
    os.chdir(spec["workdir"])
    path = os.path.join(checkout, script)
    with open(path) as f:
        source = apply_patches(f.read(), patches.get(script, []), script)
    sys.argv = [path, *spec["argv"]]
    exec(compile(source, path, "exec"), {"__name__": "__main__", "__file__": path})


# ---------------------------------------------------------------------------------------------
# The parent: prepare, run, parse


def load_config(path: str, overrides: list[str]):
    spec = importlib.util.spec_from_file_location("_reference_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: write KEY=VALUE (e.g. student.steps=5).")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a bare string
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {item}: the config has no key {key!r}.")
        node[parts[-1]] = value
    return config


def parse_line(recipe: Recipe, config, line: str, t0: float | None, now: float) -> dict | None:
    m = recipe.evaluation.search(line)
    if not m:
        return None
    acc = float(m.group("accuracy")) / (100.0 if recipe.percent else 1.0)
    return {"kind": "eval", "round": recipe.round_of(config, int(m.group("epoch"))), "accuracy": acc,
            "wall_time_s": round(now - (t0 if t0 is not None else now), 2)}


def prepare(recipe: Recipe, config, args) -> dict:
    """Data, teacher file and the child's spec; returns the spec."""
    from dfkd_jax.convert import export_checkpoint
    from dfkd_jax.data import get_spec
    from dfkd_jax.teacher import load_teacher

    recipe.check(config)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    meta = load_teacher(args.teacher).meta
    data = os.path.abspath(args.data or os.path.join(workdir, "data"))
    stamp = os.path.join(data, f".written_{recipe.data_format}_{config.data.dataset}")
    if not os.path.isfile(stamp):
        splits = dataset_splits(config.data.dataset)
        if recipe.data_format == "mnist_idx":
            write_mnist_idx(data, splits)
        else:
            write_cifar10_pickles(data, splits, get_spec(config.data.dataset).class_names)
        open(stamp, "w").close()
    teacher_file = os.path.join(workdir, "teacher.pt")
    export_checkpoint(args.teacher, teacher_file, zoo=recipe.zoo)
    paths = {"data": data, "teacher": teacher_file, "workdir": workdir}
    patches = recipe.patches(config, meta)
    for name in args.variant:
        if name not in recipe.variants:
            raise ConfigError(f"--variant {name}: the recipe has {', '.join(sorted(recipe.variants)) or 'no variants'}.")
        for rel, items in recipe.variants[name](config).items():  # applied after the recipe's own patches
            patches[rel] = patches.get(rel, []) + items
    checkout = os.path.abspath(args.checkout)
    for rel in patches:  # fail before the run, with the file named, if the checkout is another version
        with open(os.path.join(checkout, rel)) as f:
            apply_patches(f.read(), patches[rel], rel)
    return {"checkout": checkout, "script": recipe.script, "workdir": workdir,
            "argv": recipe.flags(config, args.seed, paths) + list(args.extra), "patches": patches,
            "torchvision": os.path.abspath(args.torchvision) if args.torchvision else "", "threads": args.threads,
            "stubs": list(recipe.stubs)}


def run(recipe_name: str, config, args) -> int:
    recipe = RECIPES[recipe_name]
    spec = prepare(recipe, config, args)
    workdir = spec["workdir"]
    for name in ("metrics.jsonl", "reference.log"):
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    spec_path = os.path.join(workdir, "reference.json")
    record = {**spec, "recipe": recipe_name, "variants": args.variant, "commit": args.commit, "seed": args.seed,
              "config": args.config, "set": args.set, "dataset": config.data.dataset,
              "teacher_dir": os.path.abspath(args.teacher)}
    with open(spec_path, "w") as f:
        json.dump(record, f, indent=2)
    cmd = [sys.executable, "-u", os.path.abspath(__file__), "--child", spec_path]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t_launch, t0, best = time.time(), None, None
    with open(os.path.join(workdir, "reference.log"), "w") as log, \
            open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        for line in proc.stdout:
            now = time.time()
            log.write(line)
            log.flush()
            if t0 is None and recipe.start.search(line):
                t0 = now
            ev = parse_line(recipe, config, line, t0, now)
            if ev is not None:
                metrics.write(json.dumps(ev, sort_keys=True) + "\n")
                metrics.flush()
                best = max(best or 0.0, ev["accuracy"])
                if not args.quiet:
                    print(f"round {ev['round']}: {100 * ev['accuracy']:.2f}% (best {100 * best:.2f}%), "
                          f"{ev['wall_time_s']:.0f} s", flush=True)
        rc = proc.wait()
    record.update(returncode=rc, total_s=round(time.time() - t_launch, 1))
    with open(spec_path, "w") as f:
        json.dump(record, f, indent=2)
    if rc != 0:
        print(f"error: the script exited with status {rc}; its output is in {workdir}/reference.log", file=sys.stderr)
    return rc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--checkout", required=True, help="the authors' repository, checked out")
    p.add_argument("--commit", default="", help="its commit, recorded in reference.json")
    p.add_argument("--config", required=True, help="the dfkd_jax config file whose budget both sides run")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE override of the config (repeatable)")
    p.add_argument("--teacher", required=True, help="the dfkd_jax teacher folder both sides distil")
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="where to write the dataset files (default WORKDIR/data; reused when present)")
    p.add_argument("--torchvision", help="an unpacked torchvision wheel, where torchvision itself does not import")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--variant", action="append", default=[],
                   help="a diagnostic variant of the recipe (changes the algorithm; recorded in reference.json)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("extra", nargs="*", help="more flags for the script, after --")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        if not os.path.isfile(os.path.join(args.checkout, RECIPES[args.recipe].script)):
            raise ConfigError(f"--checkout {args.checkout} has no {RECIPES[args.recipe].script}.")
        return run(args.recipe, config, args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
