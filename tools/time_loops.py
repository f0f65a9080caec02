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
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="adi,cmi,fast")
    p.add_argument("--steps", default="5,20", help="synthesis steps per round, comma-separated")
    p.add_argument("--loops", default="unroll,scan,python")
    p.add_argument("--pair", choices=tuple(PAIRS), default="lenet")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--synthesis_conv", default="", help="synthesis.conv_impl values, comma-separated ('' = the run's)")
    args = p.parse_args(argv)
    import jax
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
