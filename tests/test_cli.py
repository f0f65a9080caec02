"""The command line end to end, on a tiny Fashion-MNIST written in the real IDX format.

Every run is a real process: ``python -m dfkd_jax.main``. They share one persistent
XLA compilation cache, so only the first one pays for compiling the round.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.data_fixtures import write_fake_idx_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    write_fake_idx_dataset(base / "idx", n_train=256, n_test=48)
    e = dict(os.environ)
    e.update({
        "DFKD_JAX_DATA_DIR": str(base / "tfds"), "DFKD_JAX_CACHE": str(base / "cache"),
        "DFKD_JAX_NO_DOWNLOAD": "1", "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(base / "xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "PYTHONPATH": ROOT,
    })
    e.pop("DFKD_JAX_KILL_AT_ROUND", None)
    e.pop("DFKD_JAX_SOURCE_DIR", None)
    # the teacher: trained into the project's cache on first use (the folder of its recipe)
    return {"base": base, "env": e, "teacher": base / "cache" / "teachers" / "fashion_mnist_lenet5_e1"}


def args_for(env, workdir, *extra):
    return [sys.executable, "-m", "dfkd_jax.main", "--config", os.path.join(ROOT, "configs/fashion_mnist/dfad.py"),
            "--workdir", str(workdir),
            f"--config.data.source_dir={env['base'] / 'idx'}",
            "--config.teacher.epochs=1", "--config.teacher.batch_size=64",
            "--config.generator.ngf=4", "--config.generator.nz=8",
            "--config.train.batch_size=16", f"--config.train.rounds={ROUNDS}",
            "--config.train.eval_every=4", "--config.train.log_every=2", "--config.train.checkpoint_every=4",
            "--config.train.sample_every=4", "--config.data.eval_batch_size=32", *extra]


def run(env, workdir, *extra, extra_env=None, check=True):
    e = dict(env["env"], **(extra_env or {}))
    proc = subprocess.run(args_for(env, workdir, *extra), env=e, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def final_state(workdir, step=ROUNDS):
    """The checkpointed state on this process's first device, whatever topology saved it."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(path).item_metadata.tree
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree)
        return ckptr.restore(path, abstract)


def tensorboard_scalars(logdir) -> dict:
    """{tag: {step: value}} from the TFRecord event files in ``logdir`` (length, CRC, Event proto, CRC)."""
    import struct

    from tensorboardX.proto import event_pb2
    scalars: dict = {}
    for name in sorted(os.listdir(logdir)):
        data = (logdir / name).read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars


@pytest.fixture(scope="module")
def straight(env):
    workdir = env["base"] / "straight"
    proc = run(env, workdir)
    return workdir, proc


def test_cli_end_to_end(straight, env):
    workdir, proc = straight
    assert "student" in proc.stdout and "teacher" in proc.stdout and "best" in proc.stdout  # the summary
    results = json.loads((workdir / "results.json").read_text())
    assert results["rounds"] == ROUNDS and results["method"] == "dfad"
    history = results["history"]
    assert [h["round"] for h in history] == [4, 8]
    accs = [h["accuracy"] for h in history]
    assert (results["student"]["best"], results["student"]["last"]) == (max(accs), accs[-1])
    assert results["student"]["mean"] == pytest.approx(sum(accs) / len(accs))
    for h in history:  # counts over the 48 test images
        for key in ("accuracy", "agree", "teacher_accuracy"):
            assert h[key] * 48 == pytest.approx(round(h[key] * 48), abs=1e-6), (key, h[key])
    # the teacher's accuracy is the one its training measured on the same test split, once for the run
    teacher_meta = json.loads((env["teacher"] / "teacher.json").read_text())
    assert results["teacher"]["accuracy"] == pytest.approx(teacher_meta["test_accuracy"], abs=1e-9)
    assert {h["teacher_accuracy"] for h in history} == {results["teacher"]["accuracy"]}
    assert results["teacher"]["checkpoint"] == str(env["teacher"])
    assert results["images_per_s"] > 0 and results["compile_s"] > 0
    from PIL import Image
    with Image.open(workdir / "accuracy.png") as plot:  # the accuracy-against-round plot
        assert plot.size == (720, 420) and len(plot.convert("RGB").getcolors(1 << 20)) > 3
    try:
        import tensorboardX  # noqa: F401  (the optional extra; CI installs it)
    except ImportError:
        assert not (workdir / "tensorboard").exists()
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    if "tensorboardX" in sys.modules:  # the same scalars as metrics.jsonl, read back from the event records
        scalars = tensorboard_scalars(workdir / "tensorboard")
        for x in lines:
            for key, value in x.items():
                if key not in ("round", "kind") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = key if "/" in key else f"{x['kind']}/{key}"
                    assert scalars[tag][x["round"]] == pytest.approx(value, rel=1e-6), (tag, x["round"])
        assert scalars["eval/accuracy"] == {h["round"]: pytest.approx(h["accuracy"]) for h in history}
    assert {x["kind"] for x in lines} == {"train", "eval"}
    assert all(np.isfinite(x["student/l1"]) for x in lines if x["kind"] == "train")
    assert (workdir / "samples" / "round_000008.png").exists()
    assert json.loads((workdir / "config.json").read_text())["method"] == "dfad"
    assert (env["teacher"] / "teacher.json").exists()  # trained and cached on first use


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes on 2 cores
def test_killed_run_resumes_to_the_same_parameters(straight, env):
    """2N rounds straight == N rounds, SIGKILL right after the checkpoint, rerun to 2N."""
    workdir = env["base"] / "killed"
    proc = run(env, workdir, extra_env={"DFKD_JAX_KILL_AT_ROUND": str(ROUNDS // 2)}, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (workdir / "results.json").exists()
    proc = run(env, workdir)
    assert f"Resuming from the checkpoint of round {ROUNDS // 2}" in proc.stdout
    a, b = final_state(straight[0]), final_state(workdir)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    ra = json.loads((straight[0] / "results.json").read_text())
    rb = json.loads((workdir / "results.json").read_text())
    assert [h["accuracy"] for h in ra["history"]] == [h["accuracy"] for h in rb["history"]]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(straight, env):
    workdir = env["base"] / "nan"
    # the student's learning rate jumps to 1e28 after half the run: its loss must blow up
    proc = run(env, workdir, "--config.student.schedule=step", "--config.student.milestones=(0.5,)",
               "--config.student.decay=1e30", "--config.train.checkpoint_every=2", "--config.train.log_every=8",
               "--config.train.eval_every=1", check=False)  # evaluations before the losses are pulled
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Non-finite loss" in proc.stderr and "student/" in proc.stderr
    steps = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert steps and steps[-1] <= ROUNDS // 2
    assert f"last good checkpoint is round {steps[-1]}" in proc.stderr
    assert "--allow_config_change" in proc.stderr  # the advice is a config change: it names the flag
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in records for v in r.values() if isinstance(v, float))  # no NaN recorded
    state = final_state(workdir, steps[-1])
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


def test_unknown_config_key_lists_valid_keys(env, tmp_path):
    proc = run(env, tmp_path / "w", "--config.train.roundz=3", check=False)
    assert proc.returncode != 0
    assert "train.roundz" in proc.stderr and "train.rounds" in proc.stderr


def test_unknown_term_names_the_config_files_terms(env, tmp_path):
    """A term the config file does not set (here a misspelt option) is refused with the file's terms, not a traceback."""
    proc = run(env, tmp_path / "w", "--config.generator.terms.fc_sigma=2.0", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no term 'fc_sigma'" in proc.stderr and "(it has adv_l1)" in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("error", ["RuntimeError", "KeyError"])
def test_a_bug_keeps_its_traceback(env, tmp_path, error):
    """Only the project's own errors (UserError) become a one-line message; a bug, here in a config file, keeps its
    traceback, also a KeyError (the flag parser turns KeyErrors of unknown --config. keys into a usage message)."""
    bad = tmp_path / "buggy_config.py"
    bad.write_text(f"def get_config():\n    raise {error}('a bug in the config file')\n")
    cmd = [sys.executable, "-m", "dfkd_jax.main", "--config", str(bad), "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback (most recent call last)" in proc.stderr and "buggy_config.py" in proc.stderr
    assert last.startswith(f"{error}: ") and "a bug in the config file" in last and "error: " not in proc.stderr


def test_method_is_the_config_files(env, tmp_path):
    """--config.method=dafl on dfad.py would train DFAD and record 'dafl': refused, naming the way to choose."""
    proc = run(env, tmp_path / "w", "--config.method=dafl", check=False)
    assert proc.returncode == 2
    assert "config.method is set by the config file" in proc.stderr and "dafl, dfad" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_help_lists_the_methods_and_config_files(env):
    from dfkd_jax.methods import METHODS
    proc = subprocess.run([sys.executable, "-m", "dfkd_jax.main", "--help"], env=env["env"], capture_output=True,
                          text=True, timeout=300)
    assert "Methods" in proc.stdout, proc.stderr[-2000:]  # absl exits with status 1 after --help
    methods = proc.stdout.split("Methods")[1].split("Config files")[0]
    assert sorted(line.split()[0] for line in methods.strip().splitlines()[1:]) == sorted(METHODS)
    assert "configs/fashion_mnist/default.py" in proc.stdout and "--workdir" in proc.stdout
    assert "configs/fashion_mnist/lenet_pair.py" not in proc.stdout  # shared settings, not a runnable config


def test_finished_run_with_a_changed_config_is_refused(straight, env):
    """The finished straight run, rerun with another train.rounds: refused with the differing keys; nothing
    in the workdir changes (config.json included)."""
    workdir, _ = straight
    before = {name: (workdir / name).read_text() for name in ("config.json", "results.json")}
    proc = run(env, workdir, f"--config.train.rounds={ROUNDS + 1}", "--config.student.lr=0.5", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 key(s) differ" in proc.stderr and f"train.rounds: {ROUNDS} -> {ROUNDS + 1}" in proc.stderr
    assert "student.lr" in proc.stderr and "--allow_config_change" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {name: (workdir / name).read_text() for name in before} == before


def test_missing_dataset_names_the_fix(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    e = dict(env, env=dict(env["env"], DFKD_JAX_DATA_DIR=str(tmp_path / "tfds")))
    proc = run(e, tmp_path / "w", f"--config.data.source_dir={empty}", check=False)
    assert proc.returncode == 1
    assert "apt-get install dataset-fashion-mnist" in proc.stderr and "source_dir" in proc.stderr


def test_teacher_that_does_not_fit_lists_keys(straight, env, tmp_path):
    """A teacher folder whose variables are not those of its architecture."""
    from dfkd_jax.models import build_model
    from dfkd_jax.teacher import TeacherMeta, save_teacher
    model = build_model("lenet5_half", 10)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32))
    meta = TeacherMeta("lenet5", "fashion_mnist", 10, (32, 32, 1), (0.286,), (0.353,))
    save_teacher(str(tmp_path / "bad_teacher"), variables, meta)
    proc = run(env, tmp_path / "w", f"--config.teacher.checkpoint={tmp_path / 'bad_teacher'}", check=False)
    assert proc.returncode == 1
    assert "mis-shaped" in proc.stderr and "params/conv1/kernel" in proc.stderr
    assert "would fit: lenet5_half" in proc.stderr


def test_evaluate_command_reports_accuracy_agreement_and_loyalty(straight, env, tmp_path):
    workdir, _ = straight
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "dfkd_jax.evaluate", str(workdir), "--against", str(env["teacher"]),
           "--source_dir", str(env["base"] / "idx"), "--batch_size", "32", "--json", str(out)]
    proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    final = json.loads((workdir / "results.json").read_text())
    assert result["examples"] == 48 and result["arch"] == "lenet5_half" and result["reference_arch"] == "lenet5"
    # the same numbers the run itself reported for its last checkpoint
    assert result["accuracy"] == pytest.approx(final["student"]["last"], abs=1e-6)
    assert result["reference_accuracy"] == pytest.approx(final["teacher"]["accuracy"], abs=1e-6)
    assert result["agree"] == pytest.approx(final["agree"], abs=1e-6)
    assert result["loyalty"] == pytest.approx(final["loyalty"], abs=1e-5)
    assert "Agree@1" in proc.stdout


def test_rerunning_a_finished_run_prints_its_results(straight, env):
    workdir, _ = straight
    before = (workdir / "results.json").read_text()
    proc = run(env, workdir)
    assert f"is complete ({ROUNDS} rounds)" in proc.stdout and "best" in proc.stdout
    assert (workdir / "results.json").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adadfkd", "dafl", "zskt", "dfq", "cudfkd", "predfkd"])
def test_every_method_runs_from_the_command_line(env, tmp_path, method):
    """Each configs/fashion_mnist/<method>.py end to end through the CLI, at toy size (-m slow: about
    a minute each on 2 cores; tools/results.py runs every one of them at full size)."""
    workdir = tmp_path / method
    cmd = args_for(env, workdir, "--config.train.rounds=2", "--config.train.eval_every=2",
                   "--config.train.checkpoint_every=2", "--config.train.sample_every=2",
                   "--config.student.steps=2", "--config.student.pool_size=64", "--config.hparams.r2m_queue_size=64",
                   "--config.memory.batch_size=8", "--config.memory.nz=8")
    cmd[cmd.index("--config") + 1] = os.path.join(ROOT, f"configs/fashion_mnist/{method}.py")
    proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == method and results["rounds"] == 2
    (h,) = results["history"]  # one evaluation, at round 2: counts over the 48 test images
    assert h["round"] == 2 and results["student"]["best"] == results["student"]["last"] == h["accuracy"]
    for key in ("accuracy", "agree"):
        assert h[key] * 48 == pytest.approx(round(h[key] * 48), abs=1e-6), (key, h[key])
    assert np.isfinite(results["loyalty"]) and (workdir / "samples" / "round_000002.png").exists()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(env, workdir, extra_env=None, timeout=300, extra=()):
    """The CLI as 2 processes x 2 simulated CPU devices, jax.distributed over loopback (gloo collectives)."""
    port = _free_port()
    procs = []
    for pid in range(2):
        e = dict(env["env"], JAX_NUM_CPU_DEVICES="2", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                 JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid),
                 **(extra_env or {}))
        procs.append(subprocess.Popen(args_for(env, workdir, "--config.distributed=True", *extra), env=e, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def test_two_process_run_killed_and_resumed_matches_one_device(straight, env):
    """The CLI on 2 processes x 2 devices: sampling, evaluation and checkpoints on every process, SIGKILL of
    both right after the checkpoint of round N/2, the same command again resumes to round N; the final
    state equals the uninterrupted 1-process, 1-device run's (global-batch semantics)."""
    workdir = env["base"] / "two_procs"
    runs = _run_two_processes(env, workdir, {"DFKD_JAX_KILL_AT_ROUND": str(ROUNDS // 2)})
    assert [rc for rc, _, _ in runs] == [-9, -9], [err[-2000:] for _, _, err in runs]
    assert not (workdir / "results.json").exists()
    runs = _run_two_processes(env, workdir)
    assert [rc for rc, _, _ in runs] == [0, 0], [err[-3000:] for _, _, err in runs]
    out0, out1 = runs[0][1], runs[1][1]
    resumed = f"Resuming from the checkpoint of round {ROUNDS // 2}"
    assert resumed in out0 and resumed not in out1 and "best" not in out1  # process 0 alone logs
    results = json.loads((workdir / "results.json").read_text())
    assert results["devices"] == 4 and results["rounds"] == ROUNDS
    assert (workdir / "samples" / f"round_{ROUNDS:06d}.png").exists() and (workdir / "accuracy.png").exists()
    # the student (LeNet, no BatchNorm) and its SGD state, the pool of generated images, the round and the RNG;
    # not the generator's raw parameters: under Adam its biases right before a BatchNorm move on rounding
    # noise and the BatchNorm removes them (README, "Scale-out"; tests/test_engine.py measures it)
    a, b = final_state(straight[0]), final_state(workdir)
    for part in ("student", "pool", "round", "rng"):
        for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=part)
    ra = json.loads((straight[0] / "results.json").read_text())
    assert [h["accuracy"] for h in results["history"]] == pytest.approx([h["accuracy"] for h in ra["history"]],
                                                                      abs=1 / 48 + 1e-9)  # at most one flip


def test_two_processes_train_a_missing_teacher_once_and_both_load_it(env):
    """No teacher yet: process 0 trains and saves it while process 1 waits at a barrier, then both load it (without
    the barrier process 1 finds no teacher and stops with TeacherNotFoundError)."""
    cache, workdir = env["base"] / "cache_two_procs", env["base"] / "two_procs_teacher"
    teacher = cache / "teachers" / "fashion_mnist_lenet5_e1"
    runs = _run_two_processes(env, workdir, {"DFKD_JAX_CACHE": str(cache)}, extra=(
        "--config.train.rounds=2", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2", "--config.train.sample_every=2"))
    assert [rc for rc, _, _ in runs] == [0, 0], [err[-3000:] for _, _, err in runs]
    (_, out0, _), (_, out1, err1) = runs
    assert f"No teacher at {teacher}: training lenet5" in out0 and f"Teacher saved to {teacher}" in out0
    assert "No teacher" not in out1 + err1 and "Teacher saved" not in out1 + err1  # process 1 trained nothing
    results = json.loads((workdir / "results.json").read_text())
    meta = json.loads((teacher / "teacher.json").read_text())
    assert results["devices"] == 4 and results["rounds"] == 2
    assert results["teacher"]["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-9)
