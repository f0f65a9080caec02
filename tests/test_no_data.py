"""Data-free means no data: a whole run with a teacher folder and no dataset on the machine, then the student
scored later on labelled images in a folder (one sub-folder per class), as real processes."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from tests.test_cli import args_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def no_data(tmp_path_factory):
    from helpers import random_teacher

    from dfkd_jax.teacher import save_teacher
    base = tmp_path_factory.mktemp("no_data")
    (base / "idx").mkdir()  # an empty source folder: no dataset anywhere, and no download
    teacher = random_teacher()
    save_teacher(str(base / "teacher"), teacher.variables, teacher.meta)
    e = dict(os.environ, DFKD_JAX_DATA_DIR=str(base / "tfds"), DFKD_JAX_CACHE=str(base / "cache"),
             DFKD_JAX_NO_DOWNLOAD="1", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    e.pop("DFKD_JAX_SOURCE_DIR", None)
    env = {"base": base, "env": e}
    workdir = base / "run"
    proc = subprocess.run(args_for(env, workdir, f"--config.teacher.checkpoint={base / 'teacher'}"), env=e,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, workdir, proc


def test_a_run_needs_only_the_teacher_folder(no_data):
    base, workdir, proc = no_data
    assert "No fashion_mnist test split on this machine" in proc.stdout
    assert "no accuracy is measured" in proc.stdout and "no accuracy was measured" in proc.stdout
    assert f"python -m dfkd_jax.evaluate {workdir} --images DIR" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["accuracy_measured"] is False and results["metric"] == "agree"
    assert [h["round"] for h in results["history"]] == [4, 8]
    for h in results["history"]:
        assert "accuracy" not in h and 0.0 <= h["agree"] <= 1.0 and np.isfinite(h["loyalty"])
        assert h["synthetic_samples"] == 512
        assert h["agree"] * 512 == pytest.approx(round(h["agree"] * 512), abs=1e-6)  # a count over the samples
    assert results["student"]["last"] == results["history"][-1]["agree"]
    assert "accuracy" not in results["teacher"] and not (base / "tfds" / "dfkd_fashion_mnist").exists()


def test_evaluate_scores_the_student_on_an_image_folder(no_data, tmp_path):
    base, workdir, _ = no_data
    rng = np.random.default_rng(0)
    folder, labels, pixels = tmp_path / "labelled", [], []
    for k in (0, 3, 7):  # sub-folders named by class index; not every class needs one
        (folder / str(k)).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(img, "L").save(folder / str(k) / f"{i}.png")
            labels.append(k)
            pixels.append(img)
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "dfkd_jax.evaluate", str(workdir), "--images", str(folder), "--json", str(out)]
    e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, DFKD_JAX_DATA_DIR=str(base / "tfds"),
             DFKD_JAX_CACHE=str(base / "cache"))
    proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["examples"] == 12 and f"on the images in {folder} (12 images)" in proc.stdout
    # the same accuracy as the student computed here on the same pixels, padded and normalised as in training
    from dfkd_jax import data
    from dfkd_jax.evaluate import load_classifier
    student = load_classifier(str(workdir))
    spec = data.get_spec("fashion_mnist")
    x = data.preprocess(np.stack(pixels)[..., None],
                        dataclasses.replace(spec, mean=student.meta.mean, std=student.meta.std))
    logits = student.model.apply(student.variables, x, train=False)[0]
    expected = float(np.mean(np.argmax(jax.device_get(logits), -1) == np.asarray(labels)))
    assert result["accuracy"] == pytest.approx(expected, abs=1e-9)
