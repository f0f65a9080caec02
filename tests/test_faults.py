"""Faults a user or a machine inflicts on a run, each as real processes (``python -m dfkd_jax.main``) on the
tiny Fashion-MNIST run of tests/test_cli.py: nothing lost, nothing counted twice, one line that says what to do.

The runs share test_cli's compilation cache and teacher, so most take a few seconds.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.test_cli import ROUNDS, args_for, env, final_state, run  # noqa: F401  (env: the module fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from fault_injection import corrupt_step, dead_pid, metrics_rounds  # noqa: E402


@pytest.fixture(scope="module")
def straight(env):  # noqa: F811
    workdir = env["base"] / "straight"
    run(env, workdir, "--config.train.progress=False")
    return workdir


def _checksums(folder) -> dict:
    return {os.path.relpath(os.path.join(r, f), folder): hashlib.sha256(open(os.path.join(r, f), "rb").read()).hexdigest()
            for r, _, files in os.walk(folder) for f in files}


def _copy_run(src, dst):
    shutil.copytree(src, dst)
    (dst / "dfkd_jax.lock").write_text("")
    return dst


def _same_final_state(a, b, step=ROUNDS):
    for x, y in zip(jax.tree.leaves(final_state(a, step)), jax.tree.leaves(final_state(b, step))):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _one_line_error(proc, rc=1):
    assert proc.returncode == rc, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# --- item 1: a teacher folder is never written over ----------------------------------------------------------------

def test_teacher_folder_without_teacher_json_is_refused_and_left_alone(straight, env, tmp_path):  # noqa: F811
    broken = tmp_path / "teacher_copy"
    shutil.copytree(env["teacher"], broken)
    (broken / "teacher.json").unlink()
    before = _checksums(broken)
    proc = run(env, tmp_path / "w", f"--config.teacher.checkpoint={broken}", check=False)
    line = _one_line_error(proc)
    assert f"{broken} is not a complete teacher folder (it has variables/ but no teacher.json)" in line
    assert "Nothing was written there" in line
    assert _checksums(broken) == before


def test_mistyped_teacher_checkpoint_is_refused_not_trained(straight, env, tmp_path):  # noqa: F811
    typo = tmp_path / "teachr"
    proc = run(env, tmp_path / "w", f"--config.teacher.checkpoint={typo}", check=False)
    line = _one_line_error(proc)
    assert f"No teacher at {typo} (config.teacher.checkpoint). Nothing was written there." in line
    assert "leave teacher.checkpoint empty" in line and not typo.exists()


# --- item 2: one run per workdir ----------------------------------------------------------------------------------

def test_two_concurrent_runs_on_one_workdir(straight, env, tmp_path):  # noqa: F811
    """Started together: one runs to the end, the other stops at once naming the first one's PID; every round is
    in metrics.jsonl once."""
    workdir = tmp_path / "w"
    procs = [subprocess.Popen(args_for(env, workdir, "--config.train.progress=False"), env=env["env"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    rcs = sorted(p.returncode for p in procs)
    assert rcs == [0, 1], [err[-2000:] for _, err in outs]
    (winner,) = [p for p in procs if p.returncode == 0]
    err = outs[procs.index([p for p in procs if p.returncode == 1][0])][1]
    assert f"Another run is using --workdir {workdir} (PID {winner.pid} on {socket.gethostname()}" in err
    assert "Traceback" not in err
    assert metrics_rounds(workdir) == metrics_rounds(straight)
    _same_final_state(straight, workdir)
    lines = outs[procs.index(winner)][0].splitlines()  # what it says before the first round
    order = [next(i for i, x in enumerate(lines) if x.startswith(p)) for p in
             ("Loading the teacher from", "Loading the fashion_mnist test split", "Compiling the round")]
    assert order == sorted(order)


def test_a_killed_runs_lock_is_taken_over(straight, env, tmp_path):  # noqa: F811
    """SIGKILL right after the checkpoint of round N/2 leaves the lock file naming the dead PID; the rerun takes it
    over (saying so), resumes, and ends with the uninterrupted run's state and records."""
    workdir = tmp_path / "w"
    proc = run(env, workdir, extra_env={"DFKD_JAX_KILL_AT_ROUND": str(ROUNDS // 2)}, check=False)
    assert proc.returncode == -9
    assert json.loads((workdir / "dfkd_jax.lock").read_text())["pid"] > 0
    proc = run(env, workdir)
    assert "Taking over the lock" in proc.stdout and "which is no longer running" in proc.stdout
    assert f"Resuming from the checkpoint of round {ROUNDS // 2}" in proc.stdout
    assert (workdir / "dfkd_jax.lock").read_text() == ""  # released
    assert metrics_rounds(workdir) == metrics_rounds(straight)
    _same_final_state(straight, workdir)


def test_lock_of_a_dead_process_on_this_host_is_stale(tmp_path):
    from dfkd_jax.engine.workdir import WorkdirLock, claim
    pid = dead_pid()
    (tmp_path / "dfkd_jax.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))
    said = []
    lock = claim(str(tmp_path), log=said.append)
    assert said and f"left by PID {pid}" in said[0]
    assert json.loads((tmp_path / "dfkd_jax.lock").read_text())["pid"] == os.getpid()
    lock.release()
    other = tmp_path / "other_host"
    other.mkdir()
    (other / "dfkd_jax.lock").write_text(json.dumps({"pid": 12345, "host": "elsewhere", "started": "x"}))
    with pytest.raises(Exception, match=r"locked by PID 12345 on host elsewhere.*delete .*dfkd_jax.lock"):
        WorkdirLock(str(other))


def test_workdir_that_is_not_a_run_is_refused(env, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("x")
    line = _one_line_error(run(env, home, check=False))
    assert "already holds files that are not a dfkd_jax run (thesis.tex)" in line
    assert sorted(os.listdir(home)) == ["thesis.tex"]
    regular = tmp_path / "a_file"
    regular.write_text("x")
    assert "is a file, not a folder" in _one_line_error(run(env, regular, check=False))


# --- items 3, 4, 5: resumes -----------------------------------------------------------------------------------------

def test_corrupt_latest_checkpoint_falls_back_and_is_kept_aside(straight, env, tmp_path):  # noqa: F811
    workdir = _copy_run(straight, tmp_path / "w")
    (workdir / "results.json").unlink()
    corrupt_step(workdir / "checkpoints" / str(ROUNDS))
    proc = run(env, workdir)
    assert f"The checkpoint of round {ROUNDS} cannot be read (" in proc.stdout
    assert f"moved it to {workdir / 'corrupt_checkpoints' / f'step_{ROUNDS}'}" in proc.stdout
    assert f"Resuming from the checkpoint of round {ROUNDS // 2}" in proc.stdout and "Traceback" not in proc.stderr
    assert (workdir / "corrupt_checkpoints" / f"step_{ROUNDS}" / "state").is_dir()
    assert metrics_rounds(workdir) == metrics_rounds(straight)
    _same_final_state(straight, workdir)


def test_resume_keeps_each_round_once_and_records_config_changes(straight, env, tmp_path):  # noqa: F811
    """The last checkpoint deleted: rounds N/2+1..N run again; metrics.jsonl holds each once. The rerun changes
    train.eval_every under --allow_config_change: config_history.json says from which round it ran with which value."""
    workdir = _copy_run(straight, tmp_path / "w")
    (workdir / "results.json").unlink()
    shutil.rmtree(workdir / "checkpoints" / str(ROUNDS))
    proc = run(env, workdir, "--config.train.eval_every=2", "--allow_config_change")
    assert "recorded in config_history.json" in proc.stdout
    evals = [r for r, kind in metrics_rounds(workdir) if kind == "eval"]
    assert evals == [4, 6, 8]  # 4 from the first config, 6 and 8 from the new one; each once
    assert [r for r, kind in metrics_rounds(workdir) if kind == "train"] == [2, 4, 6, 8]
    history = json.loads((workdir / "config_history.json").read_text())
    assert [h["from_round"] for h in history] == [0, ROUNDS // 2]
    assert history[1]["changed"] == {"train.eval_every": [4, 2]} and history[1]["config"]["train"]["eval_every"] == 2
    results = json.loads((workdir / "results.json").read_text())
    assert results["config_changes"] == [{"from_round": ROUNDS // 2, "changed": {"train.eval_every": [4, 2]}}]
    assert [h["round"] for h in results["history"]] == [4, 6, 8]


def test_moved_finished_run_and_results_lost_at_the_last_round(straight, env, tmp_path):  # noqa: F811
    moved = _copy_run(straight, tmp_path / "moved")
    proc = run(env, moved)
    assert f"outputs in {moved}:" in proc.stdout and str(straight) not in proc.stdout
    (moved / "results.json").unlink()  # resumed at its last round: no round runs, no speed to report
    proc = run(env, moved)
    assert "synthetic images/s not measured" in proc.stdout and " 0 synthetic images/s" not in proc.stdout


# --- items 6, 7, 9, 10: what the command line says ---------------------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    ("--config.train.rounds=0", "config.train.rounds must be an integer of at least 1, not 0."),
    ("--config.train.rounds=-3", "config.train.rounds must be an integer of at least 1, not -3."),
    ("--config.train.batch_size=0", "config.train.batch_size must be an integer of at least 1, not 0."),
])
def test_impossible_values_are_refused(env, tmp_path, override, expected):  # noqa: F811
    proc = run(env, tmp_path / "w", override, check=False)
    assert _one_line_error(proc) == f"error: {expected}"
    assert not (tmp_path / "w").exists()


def test_command_line_mistakes_are_one_line(env, tmp_path):  # noqa: F811
    base = args_for(env, tmp_path / "w")
    cases = {
        "no such file": [a if a != os.path.join(ROOT, "configs/fashion_mnist/dfad.py") else "configs/nope.py"
                         for a in base],
        "--workdir is required": [a for i, a in enumerate(base) if a != "--workdir" and base[i - 1] != "--workdir"],
        "invalid literal for int() with base 10: 'abc'": base + ["--config.train.rounds=abc"],
        "Did you mean: train.rounds": base + ["--config.train.roundz=3"],
    }
    for expected, cmd in cases.items():
        proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, timeout=300)
        line = _one_line_error(proc, rc=2)
        assert expected in line, (expected, line)
        assert len(line) < 400, line  # suggestions, not the ~130 keys
    assert not (tmp_path / "w").exists()


def test_damaged_teacher_folders_are_one_line(straight, env, tmp_path):  # noqa: F811
    bad_json = tmp_path / "bad_json"
    shutil.copytree(env["teacher"], bad_json)
    (bad_json / "teacher.json").write_text('{"arch": "lenet5", "dataset"')
    line = _one_line_error(run(env, tmp_path / "w1", f"--config.teacher.checkpoint={bad_json}", check=False))
    assert f"{bad_json / 'teacher.json'} is damaged (JSONDecodeError" in line
    truncated = tmp_path / "truncated"
    shutil.copytree(env["teacher"], truncated)
    for r, _, files in os.walk(truncated / "variables"):
        for f in files:
            if os.sep + "d" in r or f == "manifest.ocdbt":
                path = os.path.join(r, f)
                os.truncate(path, os.path.getsize(path) // 2)
    proc = run(env, tmp_path / "w2", f"--config.teacher.checkpoint={truncated}", check=False)
    line = _one_line_error(proc)
    assert f"The teacher variables in {truncated / 'variables'} cannot be read" in line
    assert "Event loop is closed" not in proc.stderr


def test_ctrl_c_names_the_round_and_the_rerun_resumes(straight, env, tmp_path):  # noqa: F811
    workdir = tmp_path / "w"
    proc = subprocess.Popen(args_for(env, workdir, "--config.train.progress=False"), env=env["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:  # what it prints before the rounds (item 9), then Ctrl-C in the first rounds
        if line.startswith("Compiling the round"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("interrupted at round ")]
    assert line.endswith("rerun the same command to resume.")
    assert (workdir / "dfkd_jax.lock").read_text() == ""  # released
    run(env, workdir)
    assert metrics_rounds(workdir) == metrics_rounds(straight)


def test_compilation_cache_is_on_by_default(monkeypatch, tmp_path):
    from dfkd_jax.main import NO_CACHE_ENV, enable_compilation_cache
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "explicit"))
    assert enable_compilation_cache() == str(tmp_path / "explicit")  # respected as it is
    monkeypatch.setenv(NO_CACHE_ENV, "1")
    assert enable_compilation_cache() is None
    monkeypatch.delenv(NO_CACHE_ENV)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("DFKD_JAX_CACHE", str(tmp_path / "cache"))
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache() == str(tmp_path / "cache" / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "xla")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


# --- item 8: the converter on files it must not or cannot load ------------------------------------------------------

class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


@pytest.mark.torch
def test_converter_names_a_malicious_pickle_and_a_damaged_zip(tmp_path):
    torch = pytest.importorskip("torch")
    import zipfile

    from dfkd_jax.convert import convert_checkpoint
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "x": _RunsCode()}, evil)
    with pytest.raises(ValueError) as e:
        convert_checkpoint(str(evil), str(tmp_path / "out"), arch="lenet5", dataset="fashion_mnist")
    message = str(e.value)
    assert message.startswith(f"{evil} was refused: loading it would call posix.system") or "nt.system" in message
    assert "Nothing was run" in message and "Do not load it with trust_pickle" in message
    assert "will likely succeed" not in message and message.endswith("torch.save(model.state_dict()).")
    garbage = tmp_path / "garbage.pth"
    with zipfile.ZipFile(garbage, "w") as z:
        z.writestr("archive/data.pkl", b"not a pickle at all")
        z.writestr("archive/version", b"3\n")
    with pytest.raises(ValueError) as e:
        convert_checkpoint(str(garbage), str(tmp_path / "out"), arch="lenet5", dataset="fashion_mnist")
    assert str(e.value) == (f"{garbage} is damaged or is not a PyTorch checkpoint: its pickle cannot be decoded "
                            "(Unsupported operand 110). Download or save it again.")
    assert not (tmp_path / "out").exists()
