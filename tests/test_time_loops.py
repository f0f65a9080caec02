"""tools/time_loops.py: the measurement behind ``synthesis.loop`` runs and prints one row per loop."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import time_loops  # noqa: E402


def test_time_loops_prints_a_row_per_loop(capsys):
    assert time_loops.main(["--methods", "adi", "--steps", "2", "--loops", "scan,python", "--reps", "1",
                            "--batch", "4", "--synthesis_conv", ",matmul"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| adi")]
    assert [(r[2].strip(), r[3].strip()) for r in rows] == [("scan", "run"), ("scan", "matmul"), ("python", "run"),
                                                           ("python", "matmul")]
    for r in rows:
        first, rnd, per_step = (float(v) for v in r[4:7])
        assert first > 0 and rnd > 0 and abs(per_step - rnd / 2) < 1e-3


def test_time_loops_times_a_config_files_steps():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "fashion_mnist",
                        "zskd.py")
    t = time_loops.time_config_steps(path, steps=2, reps=1, synthesis_conv="matmul")
    assert t["synthesis_ms"] > 0 and t["student_ms"] > 0
    assert (t["synthesis_steps"], t["student_steps"], t["rounds"]) == (1500, 781, 480)  # the published counts
    assert abs(t["round_s"] - (1500 * t["synthesis_ms"] + 781 * t["student_ms"]) / 1e3) < 1e-6
    assert abs(t["run_h"] - 480 * t["round_s"] / 3600) < 1e-9
