"""tools/results.py: the shared budget, the seeds' statistics and the table it writes (no distillation run
here; docs/results.md's rerun and a smoke run are in the closing notes of issue 12)."""

import importlib.util
import os

import pytest

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
    assert set(tool.METHODS) | set(tool.PUBLISHED_COUNT_METHODS) | set(tool.MULTI_TEACHER_METHODS) \
        == set(methods.METHODS)
    for m in tool.MULTI_TEACHER_METHODS:
        assert os.path.isfile(os.path.join(ROOT, "configs", "fashion_mnist", f"{m}.py")), m
    assert set(tool.METHOD_CHANGES) <= set(methods.METHODS)
    for m in tool.METHODS:
        assert os.path.isfile(os.path.join(ROOT, "configs", "fashion_mnist", f"{m}.py")), m
    flags = tool.budget_overrides(150)
    assert "--config.train.rounds=150" in flags and "--config.student.steps=20" in flags
    assert "--config.train.eval_every=15" in flags
    cmd = tool.distil_command("dfq", "/w", 150, 2, "/t")
    assert "--config.seed=2" in cmd and "--config.teacher.checkpoint=/t" in cmd and cmd[-3] in flags


def test_seed_statistics():
    tool = _tool()
    runs = [_result(0.60, 0.50, 0.40, agree=0.5), _result(0.70, 0.60, 0.50, agree=0.7)]
    s = tool.row_stats(runs)
    assert s["best"] == pytest.approx((0.65, 0.05)) and s["agree"] == pytest.approx((0.6, 0.1))  # std ddof 0
    assert s["teacher"] == pytest.approx((0.9, 0.0))


def test_markdown_tables_marks_and_kept_notes(tmp_path):
    tool = _tool()
    out = tmp_path / "results.md"
    out.write_text("old table\n" + tool.NOTES_MARKER + "\nmy reading\n")
    clean = {"dafl": [_result(0.60, 0.55, 0.50), _result(0.62, 0.57, 0.52)],
             "adadfkd": [_result(0.74, 0.74, 0.60), _result(0.76, 0.70, 0.62)]}
    noisy = {0.2: {"adadfkd": [_result(0.70, 0.69, 0.58, teacher=0.85, agree=0.45)] * 2}}
    teachers = {0.0: {"accuracy": 0.9, "mean_max_prob": 0.93, "ece": 0.031},
                0.2: {"accuracy": 0.85, "mean_max_prob": 0.61, "ece": 0.24}}
    tool.write_markdown(str(out), ["tools/results.py", "--rounds", "150"], 150, [0, 1], clean, noisy, teachers,
                        "abc123")
    text = out.read_text()
    assert "old table" not in text and text.endswith(tool.NOTES_MARKER + "\nmy reading\n")
    assert "| dafl | 2 | 90.00 | 61.00 ± 1.00 | 56.00 ± 1.00 | 51.00 ± 1.00 | 50.00 ± 0.00 | 0.4000 ± 0.0000 | 300 " \
           "| 1234 |" in text
    assert "| adadfkd † | 2 | 90.00 | 75.00 ± 1.00 | 72.00 ± 2.00 |" in text  # changed method: marked
    assert "| adadfkd † | +5.00 | +5.00 | +3.00 | +3.00 | +5.00 |" in text  # drop: teacher, best, last, mean, Agree@1
    assert "| noisy | 20% | 85.00 | 0.6100 | 0.2400 |" in text and "| clean | 0% | 90.00 | 0.9300 | 0.0310 |" in text
    assert "20% of training labels" in text and "tools/results.py --rounds 150" in text and "`abc123`" in text
    assert f"- adadfkd: {tool.METHOD_CHANGES['adadfkd']}." in text and "- dafl:" not in text
    assert "over 2 seeds (0, 1)" in text


def test_a_finished_run_with_another_config_is_not_reused(tmp_path):
    """The main job refuses a workdir whose run had another config (ConfigChangedError, printed as 'error: ...',
    exit 1); the tool stops on it with what to do instead of reporting the old run or failing vaguely."""
    import sys

    from dfkd_jax.engine.loop import check_config
    from dfkd_jax.errors import ConfigChangedError
    from tests.helpers import tiny_config
    run_dir = tmp_path / "clean" / "dfad" / "seed0"
    (run_dir / "checkpoints" / "6").mkdir(parents=True)
    (run_dir / "config.json").write_text(tiny_config("dfad", rounds=6).to_json_best_effort())
    with pytest.raises(ConfigChangedError) as refused:
        check_config(str(run_dir), tiny_config("dfad", rounds=150))
    main_job = [sys.executable, "-c", f"import sys; print('error: ' + {str(refused.value)!r}, file=sys.stderr); "
                "sys.exit(1)"]  # what dfkd_jax.main does with that error
    tool = _tool()
    with pytest.raises(SystemExit) as stopped:
        tool.run(main_job, str(run_dir / "run.log"))
    assert "refusing to reuse" in str(stopped.value) and str(run_dir) in str(stopped.value)
    assert "train.rounds: 6 -> 150" in (run_dir / "run.log").read_text()
    with pytest.raises(SystemExit, match=r"failed \(exit 3\)"):  # any other failure: its exit code and log
        tool.run([sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path / "other.log"))


def test_a_run_is_recorded_and_reused_only_when_its_config_and_teacher_match(tmp_path):
    """A finished run leaves a record in the repository; a table made after its workdir is gone takes the run from
    the record only when the command would run the same config (the teacher's path aside) from a teacher with the
    same calibration."""
    import json
    tool = _tool()
    run_dir = tmp_path / "wd" / "dfad" / "seed1"
    cmd = tool.distil_command("dfad", str(run_dir), 150, 1, "/teachers/clean")
    config = tool.command_config(cmd)
    assert (config["method"], config["seed"], config["train"]["rounds"]) == ("dfad", 1, 150)
    assert config["teacher"]["checkpoint"] == "/teachers/clean" and config["student"]["steps"] == 20
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    teacher = {"accuracy": 0.9084, "mean_max_prob": 0.9254, "ece": 0.0172}
    record = tmp_path / "records" / "clean" / "dfad" / "seed1.json"
    tool.write_record(str(record), cmd, str(run_dir), _result(0.6, 0.5, 0.4), teacher, "abc123")
    kept = json.loads(record.read_text())
    assert kept["config"] == config and kept["commit"] == "abc123" and "--config.seed=1" in kept["command"]
    tool.write_record(str(record), cmd, str(run_dir), _result(0.6, 0.5, 0.4), teacher, "def456")
    assert json.loads(record.read_text())["commit"] == "abc123"  # the same run: the commit it was made at stays

    elsewhere = tool.distil_command("dfad", "/elsewhere", 150, 1, "/another/copy/of/clean")
    assert tool.reuse_record(str(record), elsewhere, teacher) == {**_result(0.6, 0.5, 0.4), "commit": "abc123"}
    got = tool.distil("dfad", str(tmp_path / "gone"), 150, 1, "/t", teacher, str(record), "def456")
    assert got["student"]["best"] == 0.6 and got["commit"] == "abc123"  # no run: the workdir has none
    with pytest.raises(SystemExit, match=r"different config \(train.eval_every: 15 -> 10; train.rounds: 150 -> 100\)"):
        tool.reuse_record(str(record), tool.distil_command("dfad", "/w", 100, 1, "/t"), teacher)
    with pytest.raises(SystemExit, match=r"seed: 1 -> 2"):
        tool.reuse_record(str(record), tool.distil_command("dfad", "/w", 150, 2, "/t"), teacher)
    with pytest.raises(SystemExit, match=r"another teacher \(accuracy: 0.908400 -> 0.900000"):
        tool.reuse_record(str(record), elsewhere, {**teacher, "accuracy": 0.9})

    out = tmp_path / "results.md"
    tool.write_markdown(str(out), ["tools/results.py"], 150, [1], {"dfad": [got]}, {}, {0.0: teacher}, "def456")
    assert "at commit `def456`" in out.read_text() and "The runs were made at commit `abc123`" in out.read_text()


def test_the_teachers_are_kept_beside_the_records(tmp_path, monkeypatch):
    """A teacher trained for the table is kept in RECORDS/teachers/; a workdir without it gets the kept copy instead
    of a retrained one (teacher training is not bit-reproducible across machines)."""
    tool = _tool()
    trained = []

    def fake_training(cmd, log_path):  # the training itself is tested in test_supervised.py
        out = cmd[cmd.index("--out") + 1]
        os.makedirs(out)
        with open(os.path.join(out, "teacher.json"), "w") as f:
            f.write(f"trained for {log_path}")
        trained.append(out)

    monkeypatch.setattr(tool, "run", fake_training)
    records = tmp_path / "records"
    first = tool.train_teacher(str(tmp_path / "wd1"), 0.2, 1, 64, str(records))
    assert trained == [first] and first.endswith("fashion_mnist_lenet5_noise20")
    kept = records / "teachers" / "fashion_mnist_lenet5_noise20" / "teacher.json"
    assert kept.read_text() == open(os.path.join(first, "teacher.json")).read()
    second = tool.train_teacher(str(tmp_path / "wd2"), 0.2, 1, 64, str(records))
    assert trained == [first] and open(os.path.join(second, "teacher.json")).read() == kept.read_text()
    tool.train_teacher(str(tmp_path / "wd3"), 0.4, 1, 64, "")  # no records: trained, nothing kept
    assert len(trained) == 2 and not (records / "teachers" / "fashion_mnist_lenet5_noise40").exists()


def test_runs_in_parallel_each_pinned_to_its_core(tmp_path):
    """--jobs N: N runs at a time, each on its own cores (one core: XLA single-threaded), results in order."""
    import sys
    import threading
    import time
    tool = _tool()
    cores = sorted(os.sched_getaffinity(0))
    assert tool.core_groups(1) == [None]
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    groups = tool.core_groups(2)
    assert len(groups) == 2 and all(len(g) == len(cores) // 2 for g in groups) and not set(groups[0]) & set(groups[1])
    with pytest.raises(SystemExit, match="more than"):
        tool.core_groups(len(cores) + 1)

    log = tmp_path / "pinned.log"
    tool.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)), os.environ.get('XLA_FLAGS'))"],
             str(log), [cores[1]])
    assert log.read_text().strip().endswith(f"[{cores[1]}] {tool.SINGLE_THREAD_XLA}")

    running, most = [], []
    lock = threading.Lock()

    def task(i, given):
        with lock:
            running.append(i)
            most.append(len(running))
        time.sleep(0.2)
        with lock:
            running.remove(i)
        return i, tuple(given)

    got = tool.run_all([lambda c, i=i: task(i, c) for i in range(6)], 2)
    assert [i for i, _ in got] == list(range(6)) and max(most) == 2
    assert {g for _, g in got} == {tuple(g) for g in groups}

    def fail(cores):
        raise SystemExit("error: a run failed")
    with pytest.raises(SystemExit, match="a run failed"):
        tool.run_all([fail] + [lambda c: time.sleep(0.1)] * 4, 1)
