"""Time a dfkd_jax round against the same round in PyTorch eager mode, in one process.

    python tools/benchmark.py                                   # the acceptance setting (below)
    python tools/benchmark.py --rounds 5 --warmup 1 --json bench.json
    python tools/benchmark.py --pair resnet34:resnet18 --dataset cifar10 --nz 256 --device cuda

Default: DFAD, LeNet-5 -> LeNet-5-half, GeneratorA ngf 64 nz 100, 32x32x1 (Fashion-MNIST),
batch 256, 1 generator + 5 student updates per round. Weights are random. The JAX round
runs on JAX's default backend, the PyTorch one on --device. Both are timed in alternating
blocks (JAX, PyTorch, PyTorch, JAX, ...) so machine load affects both alike; the table
gives the median and mean seconds per round, synthetic images/s, the ratio torch/jax
(> 1: dfkd_jax is faster), and the JAX round's FLOPs from XLA's cost analysis.
Needs the torch extra: pip install -e .[torch].

Time it on an otherwise idle machine: the table records the 1-minute load average. When
other processes keep the cores busy, PyTorch's OpenMP threads lose their time slices at
every barrier (measured on a 2-core machine under load: a tiny round 50x slower with 2
threads than with 1), which says nothing about either framework; there, pass --threads 1
or set OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "fashion_mnist32x3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="dfad", choices=("dfad",), help="the round to time (default: dfad)")
    p.add_argument("--pair", default="lenet5:lenet5_half",
                   help="TEACHER:STUDENT architectures (default: lenet5:lenet5_half; also resnet34:resnet18)")
    p.add_argument("--dataset", default="fashion_mnist", choices=DATASETS,
                   help="sets the input shape and number of classes (no data is read)")
    p.add_argument("--batch", type=int, default=256, help="synthetic batch size (default: 256)")
    p.add_argument("--ngf", type=int, default=64, help="GeneratorA width (default: 64)")
    p.add_argument("--nz", type=int, default=100, help="latent size (default: 100)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per framework (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds per framework first (default: 2)")
    p.add_argument("--blocks", type=int, default=2, help="alternating blocks the timed rounds are split into")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="PyTorch device (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", metavar="PATH", help="also write the numbers as JSON to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from dfkd_jax.bench import format_report, run_benchmark

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        report = run_benchmark(method=args.method, pair=args.pair, dataset=args.dataset, batch=args.batch,
                               ngf=args.ngf, nz=args.nz, rounds=args.rounds, warmup=args.warmup, blocks=args.blocks,
                               device=args.device, seed=args.seed, threads=args.threads or None, log=log)
    except (ImportError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    print(format_report(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
