"""Run every method on Fashion-MNIST at one equal budget and write docs/results.md.

    python tools/results.py --rounds 150 --workdir runs/results --out docs/results.md

Each method's config (configs/fashion_mnist/<method>.py) runs through the main job with
the same budget forced on all of them: the same rounds, batch, generator width, pool
and number of student updates per round, so the rows differ only in each method's
objectives, schedules and optimisers. The clean teacher is the main job's LeNet-5 (trained
and cached on first use); the noisy teacher is the same training with ``--noise`` of the
training labels replaced at random (AdaDFKD's robustness study), trained once into the
workdir. Finished runs are not repeated (the main job prints their stored results), so
an interrupted table resumes where it stopped. The table lists the teacher, best / last /
mean student accuracy over the run's evaluations, Agree@1 and probability loyalty at the
end, wall time and synthetic images per second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
METHODS = ("dfad", "dafl", "zskt", "dfq", "cudfkd", "adadfkd", "predfkd")
NOISY_METHODS = ("dfad", "dafl", "cudfkd", "adadfkd")
NOTES_MARKER = "<!-- notes: kept when tools/results.py rewrites the tables above -->"


def budget_overrides(rounds: int) -> list[str]:
    """The settings every row shares (the equal budget)."""
    every = max(rounds // 10, 1)
    return [f"--config.train.rounds={rounds}", "--config.train.batch_size=256", "--config.generator.ngf=8",
            "--config.generator.nz=100", "--config.student.batch=pool", "--config.student.pool_size=16384",
            "--config.student.steps=20", f"--config.train.eval_every={every}",
            f"--config.train.checkpoint_every={every}", f"--config.train.sample_every={rounds}",
            "--config.train.progress=False"]


def run(cmd: list[str], log_path: str) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log_path, "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        sys.exit(f"error: the command above failed (exit {code}); its output is in {log_path}")


def noisy_teacher(workdir: str, noise: float) -> str:
    path = os.path.join(workdir, "teachers", f"fashion_mnist_lenet5_noise{int(round(100 * noise))}")
    if not os.path.isdir(path):
        from dfkd_jax.config import base_config
        t = base_config().teacher  # the main job's teacher recipe, with noisy labels
        run([sys.executable, "tools/train_teacher.py", "--dataset", "fashion_mnist", "--arch", "lenet5",
             "--epochs", str(t.epochs), "--batch_size", str(t.batch_size), "--lr", str(t.lr),
             "--label_noise", str(noise), "--out", path],
            os.path.join(workdir, "noisy_teacher.log"))
    return path


def distil(method: str, workdir: str, rounds: int, teacher: str | None) -> dict:
    name = method + ("_noisy" if teacher else "")
    out = os.path.join(workdir, name)
    cmd = [sys.executable, "-m", "dfkd_jax.main", "--config", f"configs/fashion_mnist/{method}.py",
           "--workdir", out, *budget_overrides(rounds)]
    if teacher:
        cmd.append(f"--config.teacher.checkpoint={teacher}")
    os.makedirs(out, exist_ok=True)
    run(cmd, os.path.join(out, "log.txt"))
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(rows: list[tuple[str, str, dict]]) -> list[str]:
    lines = ["| method | teacher | teacher acc. | best | last | mean | Agree@1 | loyalty | wall time (s) | images/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, teacher, r in rows:
        s = r["student"]
        lines.append(f"| {method} | {teacher} | {pct(r['teacher']['accuracy'])} | {pct(s['best'])} | "
                     f"{pct(s['last'])} | {pct(s['mean'])} | {pct(r['agree'])} | {r['loyalty']:.4f} | "
                     f"{r['wall_time_s']:.0f} | {r['images_per_s']:.0f} |")
    return lines


def write_markdown(path: str, argv: list[str], rounds: int, noise: float, clean: dict, noisy: dict) -> None:
    cores = os.cpu_count()
    lines = [
        "# Results: every method on Fashion-MNIST at one budget",
        "",
        "LeNet-5 teacher -> LeNet-5-half student (DAFL variant), no real training image seen by the student.",
        f"Budget shared by every row: {rounds} rounds, batch 256, DAFL generator ngf 8 / nz 100, the student "
        "drawing 20 batches per round from the on-device pool of the last 16,384 synthetic samples; each "
        "method keeps its own objectives, schedules and optimisers (configs/fashion_mnist/<method>.py).",
        "Accuracies in %: best / last / mean over the run's evaluations (every "
        f"{max(rounds // 10, 1)} rounds); Agree@1 and probability loyalty (methods.md, AdaDFKD) at the end.",
        "",
        f"Made by `python {' '.join(shlex.quote(a) for a in argv)}` on {datetime.date.today()}, "
        f"{platform.machine()} CPU, {cores} cores, JAX on CPU.",
        "",
        "## Clean teacher",
        "",
        *table([(m, "clean", r) for m, r in clean.items()]),
    ]
    if noisy:
        lines += [
            "",
            f"## Noisy teacher ({int(round(100 * noise))}% of training labels replaced at random)",
            "",
            *table([(m, "noisy", r) for m, r in noisy.items()]),
            "",
            "Drop from the clean teacher (percentage points; positive = lower with the noisy teacher):",
            "",
            "| method | teacher | best | last | mean | Agree@1 |",
            "|---|---|---|---|---|---|",
        ]
        for m, r in noisy.items():
            if m in clean:
                c = clean[m]
                drop = [c["teacher"]["accuracy"] - r["teacher"]["accuracy"],
                        *(c["student"][k] - r["student"][k] for k in ("best", "last", "mean")),
                        c["agree"] - r["agree"]]
                lines.append(f"| {m} | " + " | ".join(f"{100 * d:+.2f}" for d in drop) + " |")
    notes = ""
    if os.path.isfile(path):  # keep the hand-written reading of the table below the marker
        with open(path) as f:
            old = f.read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + ("\n" + notes if notes else ""))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--workdir", default="runs/results")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--noisy_methods", default=",".join(NOISY_METHODS), help="'' to skip the noisy teacher")
    p.add_argument("--noise", type=float, default=0.4, help="fraction of the noisy teacher's labels replaced")
    args = p.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    clean, noisy = {}, {}
    for m in filter(None, args.methods.split(",")):
        clean[m] = distil(m, workdir, args.rounds, None)
    noisy_methods = [m for m in args.noisy_methods.split(",") if m]
    if noisy_methods:
        teacher = noisy_teacher(workdir, args.noise)
        for m in noisy_methods:
            noisy[m] = distil(m, workdir, args.rounds, teacher)
    write_markdown(os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out,
                   ["tools/results.py", *argv], args.rounds, args.noise, clean, noisy)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
