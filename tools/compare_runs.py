"""Compare runs: their students' test accuracy against the round and against wall time, one figure and tables.

    python tools/compare_runs.py --out candidates.png "lr 0.01=runs/a" "lr 0.02=runs/b"
    python tools/compare_runs.py --out docs/figures/parity_dfad.svg --target-of authors \\
        dfkd_jax=runs/jax_s0 dfkd_jax=runs/jax_s1 authors=runs/ref_s0 authors=runs/ref_s1

Each argument is ``LABEL=WORKDIR`` (or a bare WORKDIR, labelled by its name); runs that share a label
are one group (the seeds of one side): one colour and one legend entry. The points are the
evaluations in ``WORKDIR/metrics.jsonl`` (ours, or a reference run's written by tools/reference_run.py;
``wall_time_s`` is the run's own clock since its start, distillation only; a resumed run's clock
continues). The figure (PNG or SVG by --out's extension) has a panel per x (--x: round, wall_time_s,
or both, the default). The tables: per run best / last / mean accuracy and the last evaluation's round
and seconds; per group with several runs or with --target-of, the mean +- std over its runs of best,
last, mean accuracy and seconds, and the time (and round) to first reach ``--target-frac`` (95%) of the
mean last accuracy of group --target-of, averaged over the runs that reach it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfkd_jax import plots  # noqa: E402
from dfkd_jax.errors import ConfigError  # noqa: E402

PANELS = {"round": "round", "wall_time_s": "seconds of distillation"}


def evaluations(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ConfigError(f"No metrics.jsonl in {workdir}: is it a run's workdir?")
    with open(path) as f:
        evals = [r for r in map(json.loads, filter(str.strip, f)) if r.get("kind") == "eval"]
    last = {}
    for r in evals:  # a resumed run re-evaluates rounds it had reached: keep the latest record of each
        last[r["round"]] = r
    return [last[k] for k in sorted(last)]


def parse(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    return (label, path) if sep else (os.path.basename(os.path.normpath(spec)), spec)


def _stats(ev: list[dict]) -> dict[str, float]:
    acc = [r["accuracy"] for r in ev]
    return {"best": max(acc), "last": acc[-1], "mean": sum(acc) / len(acc),
            "seconds": ev[-1].get("wall_time_s", float("nan")), "round": ev[-1]["round"]}


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def time_to(ev: list[dict], target: float) -> tuple[float, int] | None:
    """(seconds, round) of the first evaluation whose accuracy is at least ``target``; None if none is."""
    for r in ev:
        if r["accuracy"] >= target:
            return r.get("wall_time_s", float("nan")), r["round"]
    return None


def table(runs: list[tuple[str, list[dict]]]) -> list[str]:
    lines = ["| run | best | last | mean | evaluations | last round | seconds |", "|---|---|---|---|---|---|---|"]
    for label, ev in runs:
        s = _stats(ev)
        lines.append(f"| {label} | {100 * s['best']:.2f} | {100 * s['last']:.2f} | {100 * s['mean']:.2f} | "
                     f"{len(ev)} | {s['round']} | {s['seconds']:.0f} |")
    return lines


def group_table(groups: list[tuple[str, list[list[dict]]]], target: float | None = None) -> list[str]:
    """Mean +- std over each group's runs; with ``target``, the mean time and round to reach it."""
    head = "| group | runs | best | last | mean | seconds |"
    rule = "|---|---|---|---|---|---|"
    if target is not None:
        head += f" seconds to {100 * target:.2f}% | round to {100 * target:.2f}% |"
        rule += "---|---|"
    lines = [head, rule]
    for label, runs in groups:
        stats = [_stats(ev) for ev in runs]
        cells = [f"{label}", str(len(runs))]
        for key, scale, fmt in (("best", 100, ".2f"), ("last", 100, ".2f"), ("mean", 100, ".2f"),
                                ("seconds", 1, ".0f")):
            m, s = _mean_std([scale * st[key] for st in stats])
            cells.append(f"{m:{fmt}} +- {s:{fmt}}")
        if target is not None:
            reached = [t for t in (time_to(ev, target) for ev in runs) if t is not None]
            if reached:
                note = "" if len(reached) == len(runs) else f" ({len(reached)} of {len(runs)} runs)"
                cells.append(f"{_mean_std([t for t, _ in reached])[0]:.0f}{note}")
                cells.append(f"{_mean_std([r for _, r in reached])[0]:.0f}{note}")
            else:
                cells += ["not reached", "not reached"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=WORKDIR or WORKDIR; runs with one label form a group")
    p.add_argument("--out", required=True, help="the figure to write (.png or .svg)")
    p.add_argument("--x", choices=("both", *PANELS), default="both", help="the x axis (default: both, two panels)")
    p.add_argument("--title", default="")
    p.add_argument("--target-of", help="the group whose mean last accuracy sets the target (e.g. the authors')")
    p.add_argument("--target-frac", type=float, default=0.95, help="fraction of that accuracy (default 0.95)")
    args = p.parse_args(argv)
    if os.path.splitext(args.out)[1].lower() not in (".png", ".svg"):
        raise ConfigError(f"--out {args.out}: give a .png or .svg file name.")
    runs, groups = [], {}
    for spec in args.runs:
        label, path = parse(spec)
        ev = evaluations(path)
        if not ev:
            raise ConfigError(f"{path} has no evaluation yet.")
        runs.append((label if label not in groups else f"{label} ({os.path.basename(os.path.normpath(path))})", ev))
        groups.setdefault(label, []).append(ev)
    target = None
    if args.target_of is not None:
        if args.target_of not in groups:
            raise ConfigError(f"--target-of {args.target_of!r} is not a label of the runs ({', '.join(groups)}).")
        target = args.target_frac * _mean_std([ev[-1]["accuracy"] for ev in groups[args.target_of]])[0]
    panels = [(k, v) for k, v in PANELS.items() if args.x in ("both", k)]
    width = 1100 if len(panels) == 2 else 720
    fig = plots.comparison_figure(list(groups.items()), args.title or "student test accuracy", panels, (width, 420))
    plots.save(fig, args.out)
    print("\n".join(table(runs)))
    if target is not None or any(len(g) > 1 for g in groups.values()):
        print()
        print("\n".join(group_table(list(groups.items()), target)))
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
