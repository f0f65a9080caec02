"""tools/compare_runs.py: accuracy of several runs against wall time, from their metrics.jsonl."""

import json
import os
import sys

import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import compare_runs  # noqa: E402

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
    assert Image.open(out).size == (720, 420)


def test_a_folder_without_metrics_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="metrics.jsonl"):
        compare_runs.main(["--out", str(tmp_path / "x.png"), str(tmp_path)])
