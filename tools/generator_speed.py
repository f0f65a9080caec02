"""Time generators forward + backward on this machine, alternating them in one process.

    python tools/generator_speed.py                       # dfad_b vs dfad_b_resize at DFAD's and the scenes' sizes
    python tools/generator_speed.py --case 16,64,1,64     # ngf, image side, channels, batch

Each step is the jitted gradient of a loss on the generator's output w.r.t. its parameters
(train-mode BatchNorm), the work a generator update does on its own network. The median
of ``--repeats`` timed calls per generator is printed with the compile time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = ((64, 128, 3, 16), (16, 64, 1, 64))  # DFAD's GeneratorB at 128x128; the Fashion-MNIST scenes runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generators", default="dfad_b,dfad_b_resize")
    p.add_argument("--case", action="append", help="ngf,side,channels,batch (repeatable)")
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dfkd_jax.models import build_generator

    cases = [tuple(map(int, c.split(","))) for c in args.case] if args.case else CASES
    for ngf, side, channels, batch in cases:
        steps = {}
        for name in args.generators.split(","):
            gen = build_generator(name, nz=args.nz, ngf=ngf, channels=channels, img_size=side)
            z = jnp.asarray(np.random.default_rng(0).normal(size=(batch, args.nz)), jnp.float32)
            variables = gen.init(jax.random.PRNGKey(0), z)

            def loss(params, stats, z, gen=gen):
                x, _ = gen.apply({"params": params, "batch_stats": stats}, z, mutable=["batch_stats"])
                return jnp.mean(x ** 2)

            step = jax.jit(jax.value_and_grad(loss))
            t0 = time.perf_counter()
            jax.block_until_ready(step(variables["params"], variables["batch_stats"], z))
            steps[name] = (step, variables, z, time.perf_counter() - t0, [])
        for _ in range(args.repeats):
            for name, (step, variables, z, _, times) in steps.items():
                t0 = time.perf_counter()
                jax.block_until_ready(step(variables["params"], variables["batch_stats"], z))
                times.append(time.perf_counter() - t0)
        for name, (_, _, _, compile_s, times) in steps.items():
            print(f"{name:<14} ngf {ngf:<3} {side}x{side}x{channels} batch {batch:<4} compile {compile_s:6.1f} s   "
                  f"forward+backward median {np.median(times):.3f} s", flush=True)


if __name__ == "__main__":
    main()
