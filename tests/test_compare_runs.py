"""tools/compare_runs.py and dfkd_jax.plots: accuracy of runs against the round and wall time, from metrics.jsonl."""

import json
import os
import sys

import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import compare_runs  # noqa: E402

from dfkd_jax import plots  # noqa: E402
from dfkd_jax.engine import outputs  # noqa: E402
from dfkd_jax.errors import ConfigError  # noqa: E402


def _run(path, evals, resumed=()):
    os.makedirs(path)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for r, acc, t in [*evals, *resumed]:
            f.write(json.dumps({"kind": "train", "round": r, "student/loss": 1.0}) + "\n")
            f.write(json.dumps({"kind": "eval", "round": r, "accuracy": acc, "wall_time_s": t}) + "\n")


def test_table_and_plot(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _run(a, [(10, 0.5, 30.0), (20, 0.7, 60.0)])
    # b was killed after round 20 and resumed from round 10: its second round-20 record is the one kept
    _run(b, [(10, 0.4, 40.0), (20, 0.6, 80.0)], resumed=[(20, 0.65, 95.0), (30, 0.62, 120.0)])
    out = str(tmp_path / "cmp.png")
    assert compare_runs.main(["--out", out, f"first={a}", b]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| first | 70.00 | 70.00 | 60.00 | 2 | 20 | 60 |"
    assert lines[3] == "| b | 65.00 | 62.00 | 55.67 | 3 | 30 | 120 |"
    assert Image.open(out).size == (1100, 420)  # two panels: against the round and against seconds
    assert compare_runs.main(["--out", out, "--x", "round", a]) == 0
    assert Image.open(out).size == (720, 420)


def test_groups_of_seeds_and_time_to_target(tmp_path, capsys):
    runs = {"ours/s0": [(10, 0.5, 10.0), (20, 0.8, 20.0)], "ours/s1": [(10, 0.7, 12.0), (20, 0.9, 24.0)],
            "theirs/s0": [(10, 0.6, 30.0), (20, 0.8, 60.0)], "theirs/s1": [(10, 0.4, 30.0), (20, 0.6, 60.0)]}
    for name, evals in runs.items():
        _run(str(tmp_path / name), evals)
    out = str(tmp_path / "cmp.svg")
    args = ["--out", out, "--target-of", "theirs"] + [f"{n.split('/')[0]}={tmp_path / n}" for n in runs]
    assert compare_runs.main(args) == 0
    text = capsys.readouterr().out
    # target: 95% of theirs' mean last accuracy (0.7) = 66.5%; ours reach it at 20 s (s0) and 12 s (s1)
    assert "| ours | 2 | 85.00 +- 7.07 | 85.00 +- 7.07 | 72.50 +- 10.61 | 22 +- 3 | 16 | 15 |" in text
    assert "| theirs | 2 | 70.00 +- 14.14 | 70.00 +- 14.14 | 60.00 +- 14.14 | 60 +- 0 | 60 (1 of 2 runs) |" in text
    assert "| ours (s1) |" in text  # the second run of a label is named by its folder
    svg = open(out).read()
    assert svg.lstrip().startswith("<?xml") and "ours (2 runs)" in svg and "seconds of distillation" in svg


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="metrics.jsonl"):
        compare_runs.main(["--out", str(tmp_path / "x.png"), str(tmp_path)])
    _run(str(tmp_path / "a"), [(10, 0.5, 30.0)])
    with pytest.raises(ConfigError, match="not a label"):
        compare_runs.main(["--out", str(tmp_path / "x.png"), "--target-of", "b", f"a={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match=".png or .svg"):
        compare_runs.main(["--out", str(tmp_path / "x.jpg"), f"a={tmp_path / 'a'}"])


def test_accuracy_plot_draws_the_curves(tmp_path):
    """The run's accuracy.png: matplotlib's lines in the series' colours, at the requested pixel size."""
    history = [{"round": r, "accuracy": 0.1 + r / 1000, "agree": 0.9, "teacher_accuracy": 0.95} for r in range(0, 301, 50)]
    path = str(tmp_path / "accuracy.png")
    outputs.save_accuracy_plot(path, history, "a run")
    img = Image.open(path).convert("RGB")
    assert img.size == (720, 420)
    colours = {c for _, c in img.getcolors(720 * 420)}
    assert outputs.PALETTE[0] in colours and outputs.PALETTE[1] in colours  # student accuracy, Agree@1
    with pytest.raises(ValueError, match=".png or .svg"):
        plots.save(plots.curves_figure([], "round"), str(tmp_path / "x.pdf"))
