"""How a round should run its synthesis loop on this device: the measurement behind ``synthesis.loop``.

    python tools/time_loops.py [--methods adi,cmi,fast] [--steps 5,20] [--loops unroll,scan,python] [--reps 3]
                               [--synthesis_conv auto,matmul]

For each method, number of synthesis steps and loop (``unroll``: one program with the steps unrolled;
``scan``: one program, a ``lax.scan`` over one step; ``python``: one jitted call per step), it builds
the inversion benchmark's round (``dfkd_jax.bench.inversion``: synthesis only, random BatchNorm
teacher, ``--batch`` 64) and prints the first call's seconds (compilation included) and the median of
``--reps`` later rounds. ``--pair lenet`` (the default) is the Fashion-MNIST LeNet-5 with BatchNorm ->
LeNet-5-half pair of the CPU configs; ``--pair wrn`` the benchmark's WRN-16-2 -> WRN-16-1 on
Fashion-MNIST-32x3. ``--synthesis_conv`` also times each ``synthesis.conv_impl`` (the synthesis steps'
convolutions, ``dfkd_jax.models.fast_conv``; the default ``''`` keeps the run's).

    python tools/time_loops.py --config configs/fashion_mnist/zskd.py [--steps 100] [--synthesis_conv ,matmul]

times one config file's steps instead (random teacher of its architecture, the run's loop pieces):
the median of ``--reps`` blocks of ``--steps`` synthesis steps and of student steps, in ms per step, and
what they make of the config's round (its steps per round) and of the whole run (its rounds), evaluation
and checkpoints left out: how long a run at the published counts takes on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAIRS = {"lenet": (("lenet5_bn", "lenet5_half"), "fashion_mnist"), "wrn": (("wrn16_2", "wrn16_1"), "fashion_mnist32x3")}


def time_round(method: str, steps: int, loop: str, pair: str, reps: int, batch: int = 64,
               synthesis_conv: str = "") -> tuple[float, float]:
    """(first call s, median later round s) of one configuration."""
    from dfkd_jax.bench import inversion
    archs, dataset = PAIRS[pair]
    run, first = inversion.jax_round(method, steps, batch, pair=archs, data__dataset=dataset, synthesis__loop=loop,
                                     synthesis__conv_impl=synthesis_conv)
    return first, _median_block(run, reps)


def time_config_steps(path: str, steps: int, reps: int, synthesis_conv: str = "") -> dict:
    """Median ms per synthesis step and per student step of the config file ``path`` (its round as a
    Python loop over one jitted step of each kind), and the config's steps per round and rounds."""
    import jax

    from dfkd_jax.bench import harness
    from dfkd_jax.bench.cpu_speed import load_config
    from dfkd_jax.engine.distiller import Distiller
    from dfkd_jax.models import fast_conv

    cfg = load_config(path)
    cfg.synthesis.loop = "python"
    if synthesis_conv:
        cfg.synthesis.conv_impl = synthesis_conv
    d = Distiller.from_config(cfg, harness.random_teacher(cfg.teacher.arch, cfg.data.dataset))
    tv = d.teacher_variables
    with fast_conv.using(cfg.conv_impl):  # as Distiller.round traces its pieces
        state, carry, acc = d.begin_synthesis(d.init(cfg.seed), tv)

        def synthesis_block():
            nonlocal state, carry, acc
            state, carry, acc = d.synthesis_steps(state, carry, tv, acc, steps)
            jax.block_until_ready(acc)

        synthesis_block()  # compiles
        synthesis = _median_block(synthesis_block, reps) / steps
        state, carry, _, acc = d.begin_student(state, carry, tv)

        def student_block():
            nonlocal state, acc
            state, acc = d.student_steps(state, carry, tv, acc, steps)
            jax.block_until_ready(acc)

        student_block()
        student = _median_block(student_block, reps) / steps
    n_syn, n_stu, rounds = d.synth.steps, d.spec.round.student_steps, int(cfg.train.rounds)
    round_s = n_syn * synthesis + n_stu * student
    return {"synthesis_ms": synthesis * 1e3, "student_ms": student * 1e3, "synthesis_steps": n_syn,
            "student_steps": n_stu, "round_s": round_s, "rounds": rounds, "run_h": rounds * round_s / 3600}


def _median_block(block, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        block()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="adi,cmi,fast")
    p.add_argument("--steps", default="5,20", help="synthesis steps per round, comma-separated")
    p.add_argument("--loops", default="unroll,scan,python")
    p.add_argument("--pair", choices=tuple(PAIRS), default="lenet")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--synthesis_conv", default="", help="synthesis.conv_impl values, comma-separated ('' = the run's)")
    p.add_argument("--config", default="", help="a config file: time its synthesis and student steps instead")
    args = p.parse_args(argv)
    import jax
    if args.config:
        steps = int(args.steps.split(",")[0]) if args.steps != p.get_default("steps") else 100
        print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; {args.config}, "
              f"{steps} steps a block, median of {args.reps}")
        print("| synthesis conv | synthesis step ms | student step ms | steps a round (synthesis + student) "
              "| round s | rounds | run h |")
        print("|---|---|---|---|---|---|---|")
        for conv in args.synthesis_conv.split(","):
            t = time_config_steps(args.config, steps, args.reps, conv)
            print(f"| {conv or 'run'} | {t['synthesis_ms']:.2f} | {t['student_ms']:.2f} | "
                  f"{t['synthesis_steps']} + {t['student_steps']} | {t['round_s']:.1f} | {t['rounds']} | "
                  f"{t['run_h']:.2f} |", flush=True)
        return 0
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
          f"pair {args.pair}, batch {args.batch}")
    print("| method | steps | loop | synthesis conv | first call s (compile + run) | round s (median) | s per step |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for steps in map(int, args.steps.split(",")):
            for loop in args.loops.split(","):
                for conv in args.synthesis_conv.split(","):
                    first, rnd = time_round(method, steps, loop, args.pair, args.reps, args.batch, conv)
                    print(f"| {method} | {steps} | {loop} | {conv or 'run'} | {first:.2f} | {rnd:.3f} | "
                          f"{rnd / steps:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
