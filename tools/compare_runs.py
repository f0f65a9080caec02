"""Compare runs: their students' test accuracy against wall time (or the round), one PNG and a markdown table.

    python tools/compare_runs.py --out candidates.png "lr 0.01=runs/a" "lr 0.02=runs/b" [--x round]

Each argument is ``LABEL=WORKDIR`` (or a bare WORKDIR, labelled by its name); the points are the
evaluations in ``WORKDIR/metrics.jsonl`` (``wall_time_s`` is the run's own clock since its start,
distillation only; a resumed run's clock continues). The table lists best / last / mean accuracy and
the last evaluation's round and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfkd_jax.engine.outputs import curves_plot  # noqa: E402
from dfkd_jax.errors import ConfigError  # noqa: E402


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


def table(runs: list[tuple[str, list[dict]]]) -> list[str]:
    lines = ["| run | best | last | mean | evaluations | last round | seconds |", "|---|---|---|---|---|---|---|"]
    for label, ev in runs:
        acc = [r["accuracy"] for r in ev]
        lines.append(f"| {label} | {100 * max(acc):.2f} | {100 * acc[-1]:.2f} | {100 * sum(acc) / len(acc):.2f} | "
                     f"{len(acc)} | {ev[-1]['round']} | {ev[-1].get('wall_time_s', float('nan')):.0f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=WORKDIR or WORKDIR")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--x", choices=("wall_time_s", "round"), default="wall_time_s")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, path = parse(spec)
        ev = evaluations(path)
        if not ev:
            raise ConfigError(f"{path} has no evaluation yet.")
        runs.append((label, ev))
    series = [(label, [r[args.x] for r in ev], [r["accuracy"] for r in ev]) for label, ev in runs]
    xlabel = "seconds of distillation" if args.x == "wall_time_s" else "round"
    curves_plot(series, xlabel, args.title or "student test accuracy").save(args.out)
    print("\n".join(table(runs)))
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
