"""tools/results.py: the shared budget and the table it writes (no distillation run here)."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location("results_tool", os.path.join(ROOT, "tools", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(best, last, mean, teacher=0.9, agree=0.5, loyalty=0.4):
    return {"teacher": {"accuracy": teacher}, "student": {"best": best, "last": last, "mean": mean},
            "agree": agree, "loyalty": loyalty, "wall_time_s": 300.0, "images_per_s": 1234.0}


def test_every_method_config_exists_and_shares_the_budget():
    tool = _tool()
    from dfkd_jax import methods
    assert set(tool.METHODS) == set(methods.METHODS)
    for m in tool.METHODS:
        assert os.path.isfile(os.path.join(ROOT, "configs", "fashion_mnist", f"{m}.py")), m
    flags = tool.budget_overrides(150)
    assert "--config.train.rounds=150" in flags and "--config.student.steps=20" in flags
    assert "--config.train.eval_every=15" in flags


def test_markdown_table_drops_and_kept_notes(tmp_path):
    tool = _tool()
    out = tmp_path / "results.md"
    out.write_text("old table\n" + tool.NOTES_MARKER + "\nmy reading\n")
    clean = {"dafl": _result(0.60, 0.55, 0.50), "adadfkd": _result(0.74, 0.74, 0.60)}
    noisy = {"adadfkd": _result(0.70, 0.69, 0.58, teacher=0.85, agree=0.45)}
    tool.write_markdown(str(out), ["tools/results.py", "--rounds", "150"], 150, 0.4, clean, noisy)
    text = out.read_text()
    assert "old table" not in text and text.endswith(tool.NOTES_MARKER + "\nmy reading\n")
    assert "| dafl | clean | 90.00 | 60.00 | 55.00 | 50.00 | 50.00 | 0.4000 | 300 | 1234 |" in text
    assert "| adadfkd | +5.00 | +4.00 | +5.00 | +2.00 | +5.00 |" in text  # teacher, best, last, mean, Agree@1
    assert "40% of training labels" in text and "tools/results.py --rounds 150" in text
