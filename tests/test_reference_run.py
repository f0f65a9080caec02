"""tools/reference_run.py on a toy "released script" the test writes: data in the script's on-disk format,
the teacher exported for it, the budget as flags, run-time patches of the script and of a module it imports
(in memory: the checkout is left as it was), its printed evaluations as metrics.jsonl records. The recipe
for the real DFAD_mnist.py is checked for what it translates and refuses; against the real checkout
only when DFKD_JAX_DFAD_CHECKOUT names one (the default suite never needs it)."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "tools"))
sys.path.insert(0, TESTS)

import reference_run as rr  # noqa: E402
import torch_reference as R  # noqa: E402

from dfkd_jax.convert import convert_state_dict  # noqa: E402
from dfkd_jax.data.idx import read_idx  # noqa: E402
from dfkd_jax.errors import ConfigError  # noqa: E402
from dfkd_jax.teacher import TeacherMeta, save_teacher  # noqa: E402

CONFIG = os.path.join(os.path.dirname(TESTS), "configs", "fashion_mnist", "dfad.py")
PARITY = ["student.batch='fresh'", "student.steps=5", "student.schedule='constant'", "generator.schedule='constant'"]

TOY_SCRIPT = '''
import argparse, os, struct, time
import numpy as np
import torch
import helpers

p = argparse.ArgumentParser()
p.add_argument("--root"); p.add_argument("--ckpt"); p.add_argument("--epochs", type=int); p.add_argument("--seed", type=int)
args = p.parse_args()

def idx(path):
    raw = open(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

images = idx(os.path.join(args.root, "MNIST", "raw", "t10k-images-idx3-ubyte"))
labels = idx(os.path.join(args.root, "MNIST", "raw", "t10k-labels-idx1-ubyte"))
sd = torch.load(args.ckpt)
print("device", "cuda" if torch.cuda.is_available() else "cpu")
print("teacher keys", len(sd), "conv1", tuple(sd["conv1.weight"].shape), "images", images.shape, int(labels.sum()))
print("loaded the teacher")
STEPS = 2
for epoch in range(1, args.epochs + 1):
    time.sleep(0.05)
    acc = helpers.accuracy(epoch, STEPS)
    print("epoch %d: acc %.2f%%" % (epoch, acc))
os.makedirs("log", exist_ok=True)
open("log/done", "w").write(str(args.seed))
'''

TOY_HELPERS = '''
def accuracy(epoch, steps):
    return 10.0 * epoch + steps
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "train.py").write_text(TOY_SCRIPT)
    (checkout / "helpers.py").write_text(TOY_HELPERS)
    before = {p: p.read_text() for p in checkout.iterdir()}
    recipe = rr.Recipe(
        script="train.py", zoo="dfad", data_format="mnist_idx",
        flags=lambda c, seed, paths: ["--root", paths["data"], "--ckpt", paths["teacher"],
                                      "--epochs", str(int(c.train.rounds) // int(c.train.eval_every)), "--seed", str(seed)],
        patches=lambda c, meta: {"train.py": [("STEPS = 2", f"STEPS = {int(c.student.steps)}", 1)],
                                 "helpers.py": [("10.0 * epoch", "10.0 * epoch + 0.5", 1)]},
        evaluation=re.compile(r"epoch (?P<epoch>\d+): acc (?P<accuracy>[\d.]+)%"),
        start=re.compile(r"^loaded the teacher"), round_of=lambda c, e: e * int(c.train.eval_every),
        check=lambda c: None)
    monkeypatch.setitem(rr.RECIPES, "toy", recipe)
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8), rng.integers(0, 10, n))
              for s, n in (("train", 20), ("test", 12))}
    monkeypatch.setattr(rr, "dataset_splits", lambda dataset: splits)
    module = R.randomize_(R.build("lenet5"), seed=1)
    meta = TeacherMeta(arch="lenet5", dataset="fashion_mnist", num_classes=10, input_shape=(32, 32, 1),
                       mean=(0.2860,), std=(0.3530,))
    teacher = save_teacher(str(tmp_path / "teacher"), convert_state_dict(module.state_dict(), "lenet5"), meta)
    yield checkout, teacher, splits, before


def test_toy_script_end_to_end(toy, tmp_path, capsys):
    checkout, teacher, splits, before = toy
    work = tmp_path / "ref"
    rc = rr.main(["toy", "--checkout", str(checkout), "--commit", "abc123", "--config", CONFIG, "--teacher", teacher,
                  "--workdir", str(work), "--seed", "3", "--set", "train.rounds=150", "--set", "student.steps=7"])
    assert rc == 0, (work / "reference.log").read_text()
    log = (work / "reference.log").read_text()
    assert "device cpu" in log
    assert "teacher keys 10 conv1 (6, 1, 5, 5) images (12, 32, 32) " + str(int(splits["test"][1].sum())) in log
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    # 150 rounds at eval_every 50 = 3 epochs; patched: 10 * epoch + 0.5 + 7 steps
    assert [(r["kind"], r["round"], r["accuracy"]) for r in records] == [
        ("eval", 50, pytest.approx(0.175)), ("eval", 100, pytest.approx(0.275)), ("eval", 150, pytest.approx(0.375))]
    assert 0 < records[0]["wall_time_s"] <= records[-1]["wall_time_s"] < 30
    assert (work / "log" / "done").read_text() == "3"  # the script ran in the workdir
    np.testing.assert_array_equal(read_idx(work / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"),
                                  splits["train"][0][..., 0])
    ref = json.loads((work / "reference.json").read_text())
    assert ref["commit"] == "abc123" and ref["returncode"] == 0 and ref["patches"]["train.py"][0][1] == "STEPS = 7"
    assert {p: p.read_text() for p in checkout.iterdir() if p.suffix == ".py"} == before  # nothing written there
    assert "round 150: 37.50% (best 37.50%)" in capsys.readouterr().out


def test_a_checkout_of_another_version_is_refused(toy, tmp_path, capsys):
    checkout, teacher, _, _ = toy
    (checkout / "helpers.py").write_text("def accuracy(epoch, steps):\n    return 0.0\n")
    rc = rr.main(["toy", "--checkout", str(checkout), "--config", CONFIG, "--teacher", teacher,
                  "--workdir", str(tmp_path / "ref")])
    assert rc == 2
    assert "helpers.py: expected 1 occurrence(s) of '10.0 * epoch', found 0" in capsys.readouterr().err


def test_cifar10_pickles_in_torchvision_layout(tmp_path):
    rng = np.random.default_rng(1)
    splits = {"train": (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10) % 10),
              "test": (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.arange(4))}
    folder = rr.write_cifar10_pickles(str(tmp_path), splits, ["a"] * 10)
    from dfkd_jax.data.cifar import read_cifar_split

    for split in ("train", "test"):
        x, y = read_cifar_split(folder, "cifar10", split)
        np.testing.assert_array_equal(x, splits[split][0])
        np.testing.assert_array_equal(y, splits[split][1])
    with open(os.path.join(folder, "batches.meta"), "rb") as f:
        assert pickle.load(f)[b"label_names"][0] == b"a"


def test_dfad_recipe_translates_the_budget_and_refuses_what_it_cannot_run():
    recipe = rr.RECIPES["dfad_mnist"]
    config = rr.load_config(CONFIG, PARITY)
    recipe.check(config)
    flags = recipe.flags(config, 2, {"data": "/d", "teacher": "/t.pt"})
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs == {"--batch_size": "256", "--epochs": "12", "--epoch_itrs": "50", "--lr_S": "0.01", "--lr_G": "0.001",
                     "--weight_decay": "0.0001", "--nz": "100", "--data_root": "/d", "--ckpt": "/t.pt", "--seed": "2",
                     "--test_batch_size": "1000"}
    patches = recipe.patches(config, TeacherMeta("lenet5", "fashion_mnist", 10, (32, 32, 1), (0.286,), (0.353,)))
    assert "ngf=8" in patches["DFAD_mnist.py"][0][1] and patches["DFAD_mnist.py"][1][1] == "for k in range(5):"
    assert patches["dataloader.py"][0][1] == "transforms.Normalize((0.286,), (0.353,))"
    m = recipe.evaluation.search("Epoch 3 Test set: Average loss: 0.1234, Accuracy: 7012/10000 (70.1200%)")
    assert (m.group("epoch"), m.group("accuracy")) == ("3", "70.1200")
    with pytest.raises(ConfigError, match="student.batch"):
        recipe.check(rr.load_config(CONFIG, []))  # the project's config learns from a pool: not the script's
    with pytest.raises(ConfigError, match="no key"):
        rr.load_config(CONFIG, ["student.nope=1"])


@pytest.mark.skipif(not os.environ.get("DFKD_JAX_DFAD_CHECKOUT"), reason="needs the authors' DFAD checkout")
def test_dfad_patches_apply_to_the_real_checkout():
    checkout = os.environ["DFKD_JAX_DFAD_CHECKOUT"]
    config = rr.load_config(CONFIG, PARITY)
    patches = rr.RECIPES["dfad_mnist"].patches(config, TeacherMeta("lenet5", "fashion_mnist", 10, (32, 32, 1),
                                                                  (0.286,), (0.353,)))
    for rel, items in patches.items():
        with open(os.path.join(checkout, rel)) as f:
            source = rr.apply_patches(f.read(), items, rel)
        for rel2, extra in rr.RECIPES["dfad_mnist"].variants["generator_first"](config).items():
            if rel2 == rel:
                assert "for k in range(5 if (epoch, i) != (1, 0) else 0):" in rr.apply_patches(source, extra, rel)
