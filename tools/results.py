"""Run every method on Fashion-MNIST at one equal budget, over several seeds, and write docs/results.md.

    python tools/results.py --rounds 150 --seeds 0,1,2 --noise 0.2,0.4 --workdir runs/results --out docs/results.md \
        --jobs 2

Each method's config (configs/fashion_mnist/<method>.py) runs through the main job with the
same budget forced on all of them: the same rounds, batch, generator, pool and number of
student updates per round, so the rows differ only in each method's objectives, schedules
and optimisers. Every row is run with each seed; the table gives mean +- standard deviation
over the seeds of the best, last and mean student accuracy over the run's evaluations, of
Agree@1 and of probability loyalty at the end. The teachers (the clean one and one per noise
level, with that fraction of the training labels replaced at random: AdaDFKD's robustness
study) are trained once into the workdir with the main job's recipe, and their calibration on
the test set is reported (mean max-probability and expected calibration error).

Finished runs are not repeated: the main job prints a finished run's stored results, and it
refuses (exit 1, listing the keys) to reuse a workdir whose run was made with a different
config, so an interrupted table resumes where it stopped and a changed method is never
reported from an old run. Each finished run also leaves a record in the repository
(``--records``, default docs/results_runs/<level>/<method>/seed<k>.json: its command, commit,
date, full config, its teacher's calibration and its results.json), so a table made over
several sessions or machines survives the loss of the workdirs: a run whose workdir is gone is
taken from its record only when the config this command would run equals the record's (the
keys the main job ignores on resume and the teacher's path aside) and the teacher now has the
same test accuracy and calibration as the record's; otherwise the tool stops with the
differing keys. The teachers are kept beside the records (RECORDS/teachers/, about 290 KB each:
their training is not bit-reproducible across machines) and copied into a workdir that lacks
them. The markdown records the commit and the command, and the commits the runs were made at;
rows whose method changed since the previous table (``METHOD_CHANGES``) are marked.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import json
import os
import platform
import queue
import shlex
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
METHODS = ("dfad", "dafl", "zskt", "dfq", "cudfkd", "adadfkd", "predfkd", "adi", "cmi", "fast")
NOISY_METHODS = ("dfad", "dafl", "cudfkd", "adadfkd")
# methods whose Fashion-MNIST configs are at the published counts (48,000 impressions of 1500 steps: GPU-sized),
# not rows of the equal-budget table
PUBLISHED_COUNT_METHODS = ("zskd", "soft_targeted")
# methods whose rows need several teachers (--config.teacher.checkpoints), not rows of the one-teacher table
MULTI_TEACHER_METHODS = ("mtcki",)
NOTES_MARKER = "<!-- notes: kept when tools/results.py rewrites the tables above -->"

# What changed in a method since the previous published table (kept by hand when a method's code changes;
# its rows are marked, and the note is printed under the tables).
METHOD_CHANGES = {
    "zskt": "KL with PyTorch's 'mean' reduction (/ 10 classes) next to 250 x attention, as ZSKT's solver.py",
    "dfq": "student weight decay 1e-4, generator Adam betas (0.5, 0.999), student in eval mode in the "
           "generator's step (CMI's datafree_kd.py / generative.py)",
    "cudfkd": "student L1 (the script's --loss l1) instead of KD at tau 20; student in eval mode in the "
              "generator's step; adversarial ramp and self-paced lambda from the run's length",
    "adadfkd": "adversarial 9 KL_3 constant at 1 and unmasked (the current script); relation InfoNCE anchored on "
               "the teacher's features; student in eval mode in the generator's step; lambda from the run's length",
    "predfkd": "JS with PyTorch's 'mean' reduction and the teacher detached; generator BatchNorm eps 0.8 and "
               "U(+-0.08) init; replay objective 5 balance + one_hot + MSE moments, decoded in eval mode; the "
               "memory updated after the student's step",
}


def budget_overrides(rounds: int) -> list[str]:
    """The settings every row shares (the equal budget)."""
    every = max(rounds // 10, 1)
    return [f"--config.train.rounds={rounds}", "--config.train.batch_size=256", "--config.generator.ngf=8",
            "--config.generator.nz=100", "--config.student.batch=pool", "--config.student.pool_size=16384",
            "--config.student.steps=20", f"--config.train.eval_every={every}",
            f"--config.train.checkpoint_every={every}", f"--config.train.sample_every={rounds}",
            "--config.train.progress=False"]


def commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty" if dirty else "")


# XLA:CPU on one thread: with one run per core, its own thread pool only competes with the other runs
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def run(cmd: list[str], log_path: str, cores: list[int] | None = None) -> None:
    """Run ``cmd`` with its output in ``log_path``; with ``cores``, pinned to them (one core: XLA single-threaded)."""
    env = None
    if cores and len(cores) == 1:
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()}
    print(("" if not cores else f"[cores {','.join(map(str, cores))}] ") + "$ " +
          " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        if cores:  # at once: the threads the run starts later (JAX's, after its imports) inherit it
            os.sched_setaffinity(proc.pid, cores)
        code = proc.wait()
    if code:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        if "was made with a different config" in tail:
            sys.exit(f"error: refusing to reuse {os.path.dirname(log_path)}: its run was made with a different "
                     f"config (the keys are in {log_path}). Use another --workdir, or delete that run to redo it.")
        sys.exit(f"error: the command above failed (exit {code}); its output is in {log_path}")


def teacher_dir(workdir: str, noise: float) -> str:
    return os.path.join(workdir, "teachers", f"fashion_mnist_lenet5_noise{int(round(100 * noise))}")


def train_teacher(workdir: str, noise: float, epochs: int | None, examples: int, records: str = "") -> str:
    """The main job's teacher recipe (``base_config().teacher``) with ``noise`` of the labels replaced.

    With ``records``, the teacher is kept there (RECORDS/teachers/<name>: training is not bit-reproducible across
    machines, and the records' runs must share their teacher) and a workdir without it gets the kept one."""
    import shutil
    path = teacher_dir(workdir, noise)
    kept = os.path.join(records, "teachers", os.path.basename(path)) if records else ""
    if kept and os.path.isdir(kept) and not os.path.isdir(path):
        shutil.copytree(kept, path)
    if not os.path.isdir(path):
        from dfkd_jax.config import base_config
        t = base_config().teacher
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run([sys.executable, "tools/train_teacher.py", "--dataset", "fashion_mnist", "--arch", t.arch,
             "--epochs", str(epochs or t.epochs), "--batch_size", str(t.batch_size), "--lr", str(t.lr),
             "--label_noise", str(noise), "--train_examples", str(examples), "--out", path],
            os.path.join(workdir, f"teacher_noise{int(round(100 * noise))}.log"))
    if kept and not os.path.isdir(kept):
        shutil.copytree(path, kept)
    return path


def teacher_calibration(path: str) -> dict[str, float]:
    """Test accuracy, mean max-probability and ECE of the teacher in ``path`` on the Fashion-MNIST test split."""
    import dataclasses

    import jax

    from dfkd_jax import data, metrics
    from dfkd_jax.teacher import load_teacher
    teacher = load_teacher(path)
    spec = data.get_spec("fashion_mnist")
    images, labels = data.load_split("fashion_mnist", "test")
    x = data.preprocess(images, dataclasses.replace(spec, mean=teacher.meta.mean, std=teacher.meta.std))
    apply = jax.jit(lambda v, xb: teacher.model.apply(v, xb, train=False)[0])
    logits = np.concatenate([np.asarray(apply(teacher.variables, x[i:i + 1000])) for i in range(0, len(x), 1000)])
    return metrics.calibration(logits, labels)


def distil_command(method: str, out: str, rounds: int, seed: int, teacher: str) -> list[str]:
    return [sys.executable, "-m", "dfkd_jax.main", "--config", f"configs/fashion_mnist/{method}.py",
            "--workdir", out, *budget_overrides(rounds), f"--config.seed={seed}",
            f"--config.teacher.checkpoint={teacher}"]


def command_config(cmd: list[str]) -> dict:
    """The config the main job ``cmd`` (from ``distil_command``) runs, as its workdir's config.json holds it."""
    from absl import flags
    from ml_collections import config_flags
    i = cmd.index("--config")
    argv = ["dfkd_jax.main", "--config", os.path.join(ROOT, cmd[i + 1])]
    argv += [a for a in cmd[i + 2:] if a.startswith("--config.")]
    values = flags.FlagValues()  # its override flags are defined from sys_argv, as the main job's from sys.argv
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return json.loads(values["config"].value.to_json_best_effort())


def record_path(records: str, level: str, method: str, seed: int) -> str:
    return os.path.join(records, level, method, f"seed{seed}.json")


def write_record(path: str, cmd: list[str], run_dir: str, results: dict, teacher: dict[str, float],
                 revision: str) -> None:
    """Keep a finished run in the repository: command, commit, date, config, teacher calibration, results."""
    if os.path.isfile(path):
        with open(path) as f:
            if json.load(f)["results"] == results:  # this run's record already (its commit is kept)
                return
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"command": " ".join(shlex.quote(c) for c in ["python", *cmd[1:]]), "commit": revision,
              "date": datetime.date.today().isoformat(), "teacher": teacher, "config": config, "results": results}
    with open(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def reuse_record(path: str, cmd: list[str], teacher: dict[str, float]) -> dict:
    """The results of the run recorded in ``path``, if it is the run ``cmd`` would make from ``teacher``;
    otherwise stop with what differs."""
    from dfkd_jax.engine.loop import RESUME_SAFE_KEYS, config_differences
    with open(path) as f:
        record = json.load(f)
    diffs = config_differences(record["config"], command_config(cmd), ignore=RESUME_SAFE_KEYS | {"teacher.checkpoint"})
    if diffs:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
        sys.exit(f"error: refusing to reuse the record {path}: its run was made with a different config "
                 f"({listed}). Delete the record to redo the run.")
    changed = [k for k in ("accuracy", "mean_max_prob", "ece") if abs(record["teacher"][k] - teacher[k]) > 1e-6]
    if changed:
        listed = "; ".join(f"{k}: {record['teacher'][k]:.6f} -> {teacher[k]:.6f}" for k in changed)
        sys.exit(f"error: refusing to reuse the record {path}: its run was made from another teacher ({listed}; "
                 "the teacher was retrained differently). Restore that teacher, or delete the record to redo the run.")
    return {**record["results"], "commit": record["commit"]}


def core_groups(jobs: int) -> list[list[int] | None]:
    """The cores of each of ``jobs`` concurrent runs (``[None]``: one run on every core)."""
    cores = sorted(os.sched_getaffinity(0))
    if jobs <= 1:
        return [None]
    if jobs > len(cores):
        sys.exit(f"error: --jobs {jobs} is more than this process's {len(cores)} cores.")
    per = len(cores) // jobs
    return [cores[i * per:(i + 1) * per] for i in range(jobs)]


def run_all(tasks: list, jobs: int) -> list:
    """``task(cores)`` for every task, ``jobs`` at a time, each on its own cores (``core_groups``); the results in
    the tasks' order. A failure stops the tasks not started and is raised once the running ones end."""
    groups = core_groups(jobs)
    free = queue.Queue()
    for g in groups:
        free.put(g)

    def one(task):
        cores = free.get()
        try:
            return task(cores)
        finally:
            free.put(cores)

    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(one, t) for t in tasks]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def distil(method: str, workdir: str, rounds: int, seed: int, teacher: str, calibration: dict[str, float] | None = None,
           record: str = "", revision: str = "", cores: list[int] | None = None) -> dict:
    """One run's results: from its workdir (run or resumed there), or from its ``record`` when the workdir has no
    finished run; a finished run is recorded in ``record`` (when given)."""
    out = os.path.join(workdir, method, f"seed{seed}")
    cmd = distil_command(method, out, rounds, seed, teacher)
    if record and os.path.isfile(record) and not os.path.isfile(os.path.join(out, "results.json")):
        shown = os.path.relpath(record, ROOT) if record.startswith(ROOT + os.sep) else record
        print(f"{method} seed {seed}: from its record {shown}", flush=True)
        return reuse_record(record, cmd, calibration)
    os.makedirs(out, exist_ok=True)
    run(cmd, os.path.join(out, "log.txt"), cores)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    if record:
        write_record(record, cmd, out, results, calibration, revision)
        with open(record) as f:
            revision = json.load(f)["commit"]
    return {**results, "commit": revision}


def row_stats(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation (ddof 0) over the seeds' runs of each reported quantity."""
    values = {
        "teacher": [r["teacher"]["accuracy"] for r in runs],
        "best": [r["student"]["best"] for r in runs], "last": [r["student"]["last"] for r in runs],
        "mean": [r["student"]["mean"] for r in runs], "agree": [r["agree"] for r in runs],
        "loyalty": [r["loyalty"] for r in runs], "wall": [r["wall_time_s"] for r in runs],
        "ips": [r["images_per_s"] for r in runs],
    }
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items()}


def _pm(stat: tuple[float, float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * stat[0]:.{digits}f} ± {scale * stat[1]:.{digits}f}"


def _name(method: str) -> str:
    return f"{method} †" if method in METHOD_CHANGES else method


def table(rows: dict[str, list[dict]]) -> list[str]:
    lines = ["| method | seeds | teacher acc. | best | last | mean | Agree@1 | loyalty | wall time (s) | images/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, runs in rows.items():
        s = row_stats(runs)
        lines.append(f"| {_name(method)} | {len(runs)} | {100 * s['teacher'][0]:.2f} | {_pm(s['best'])} | "
                     f"{_pm(s['last'])} | {_pm(s['mean'])} | {_pm(s['agree'])} | {_pm(s['loyalty'], 1.0, 4)} | "
                     f"{s['wall'][0]:.0f} | {s['ips'][0]:.0f} |")
    return lines


def write_markdown(path: str, argv: list[str], rounds: int, seeds: list[int], clean: dict[str, list[dict]],
                   noisy: dict[float, dict[str, list[dict]]], teachers: dict[float, dict[str, float]],
                   revision: str) -> None:
    every = max(rounds // 10, 1)
    lines = [
        "# Results: every method on Fashion-MNIST at one budget",
        "",
        "LeNet-5 teacher -> LeNet-5-half student (DAFL variant), no real training image seen by the student.",
        f"Budget shared by every row: {rounds} rounds, batch 256, DFAD's GeneratorA at ngf 8 / nz 100, the student "
        "drawing 20 batches per round from the on-device pool of the last 16,384 synthetic samples; each "
        "method keeps its own objectives, schedules and optimisers (configs/fashion_mnist/<method>.py).",
        f"Each row: mean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}) of the best, "
        f"last and mean student accuracy (%) over the run's evaluations (every {every} rounds), and of Agree@1 (%) "
        "and probability loyalty at the end; wall time and images/s are means.",
        "",
        f"Made by `python {' '.join(shlex.quote(a) for a in argv)}` at commit `{revision}` on "
        f"{datetime.date.today()}, {platform.machine()} CPU, {os.cpu_count()} cores, JAX on CPU. Each run is "
        f"`python -m dfkd_jax.main --config configs/fashion_mnist/<method>.py --workdir <dir> "
        f"{' '.join(budget_overrides(rounds))} --config.seed=<seed> --config.teacher.checkpoint=<teacher>`.",
    ]
    made = sorted({r.get("commit", revision) for rows in [clean, *noisy.values()] for runs in rows.values()
                   for r in runs})
    if made and made != [revision]:
        lines.append(f"The runs were made at commit{'s' if len(made) > 1 else ''} {', '.join(f'`{c}`' for c in made)}; "
                     "each run's record (command, commit, config, teacher, results) is in docs/results_runs/.")
    lines += [
        "",
        "## Teachers",
        "",
        "| teacher | labels replaced | test accuracy | mean max-probability | ECE (15 bins) |",
        "|---|---|---|---|---|",
    ]
    for noise, c in sorted(teachers.items()):
        lines.append(f"| {'clean' if noise == 0 else 'noisy'} | {100 * noise:.0f}% | {100 * c['accuracy']:.2f} | "
                     f"{c['mean_max_prob']:.4f} | {c['ece']:.4f} |")
    lines += ["", "## Clean teacher", "", *table(clean)]
    for noise, rows in sorted(noisy.items()):
        lines += ["", f"## Noisy teacher ({100 * noise:.0f}% of training labels replaced at random)", "",
                  *table(rows), "",
                  "Drop from the clean teacher (percentage points, difference of the means; positive = lower with "
                  "the noisy teacher):", "", "| method | teacher | best | last | mean | Agree@1 |",
                  "|---|---|---|---|---|---|"]
        for m, runs in rows.items():
            if m in clean:
                a, b = row_stats(clean[m]), row_stats(runs)
                drop = [a[k][0] - b[k][0] for k in ("teacher", "best", "last", "mean", "agree")]
                lines.append(f"| {_name(m)} | " + " | ".join(f"{100 * d:+.2f}" for d in drop) + " |")
    changed = [m for m in METHOD_CHANGES if m in clean or any(m in rows for rows in noisy.values())]
    if changed:
        lines += ["", "† the method changed since the previous table:", ""]
        lines += [f"- {m}: {METHOD_CHANGES[m]}." for m in changed]
    notes = ""
    if os.path.isfile(path):  # keep the hand-written reading of the table below the marker
        with open(path) as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + ("\n" + notes if notes else ""))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--workdir", default="runs/results")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--noisy_methods", default=",".join(NOISY_METHODS), help="'' to skip the noisy teachers")
    p.add_argument("--noise", default="0.2,0.4", help="fractions of the noisy teachers' labels replaced")
    p.add_argument("--records", default=os.path.join("docs", "results_runs"),
                   help="folder of the finished runs' records (relative to the repository; '' for none)")
    p.add_argument("--teacher_epochs", type=int, default=0, help="0 = the main job's recipe (smoke runs: fewer)")
    p.add_argument("--teacher_examples", type=int, default=0, help="0 = all training images (smoke runs: fewer)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each pinned to its share of the cores (one core each: XLA single-threaded)")
    p.add_argument("--compilation_cache", default=None,
                   help="JAX's persistent compilation cache for the runs (default WORKDIR/xla_cache; '' for none): "
                        "the seeds and noise levels of a method compile the same programs, so only its first run "
                        "pays the compile")
    args = p.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    # read by JAX in each run's process (it inherits the environment); an explicit flag overrides the environment
    if args.compilation_cache is None:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workdir, "xla_cache"))
    elif args.compilation_cache:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(args.compilation_cache)
    else:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    seeds = [int(s) for s in _floats(args.seeds)]
    methods = [m for m in args.methods.split(",") if m]
    noisy_methods = [m for m in args.noisy_methods.split(",") if m]
    levels = [0.0] + (_floats(args.noise) if noisy_methods else [])
    revision = commit()
    teachers, results, tasks = {}, {}, []
    records = os.path.join(ROOT, args.records) if args.records else ""
    for noise in levels:
        path = train_teacher(workdir, noise, args.teacher_epochs or None, args.teacher_examples, records)
        teachers[noise] = teacher_calibration(path)
        level = "clean" if noise == 0 else f"noise{int(round(100 * noise))}"
        for m in (methods if noise == 0 else noisy_methods):
            for seed in seeds:
                record = record_path(records, level, m, seed) if records else ""
                tasks.append(((noise, m), functools.partial(distil, m, os.path.join(workdir, level), args.rounds,
                                                            seed, path, teachers[noise], record, revision)))
    for (noise, m), outcome in zip([key for key, _ in tasks], run_all([task for _, task in tasks], args.jobs)):
        results.setdefault(noise, {}).setdefault(m, []).append(outcome)
    for noise in levels:
        results.setdefault(noise, {})
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    write_markdown(out, ["tools/results.py", *argv], args.rounds, seeds, results.pop(0.0), results, teachers,
                   revision)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
