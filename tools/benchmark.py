"""Time a dfkd_jax round against the same round in PyTorch eager mode, in one process.

    python tools/benchmark.py                                   # the default case (below)
    python tools/benchmark.py --rounds 5 --warmup 1 --json bench.json
    python tools/benchmark.py --pair resnet34:resnet18 --dataset cifar10 --nz 256 --device cuda
    python tools/benchmark.py --pair resnet34:resnet18 --dataset cifar10 --nz 256 --device cuda \\
        --dtype bfloat16 --peak                                 # bfloat16 JAX round, % of matmul peak
    python tools/benchmark.py --peak-only --device cuda         # the matmul peaks only
    python tools/benchmark.py --suite cpu-small --markdown docs/performance.md
    python tools/benchmark.py --suite gpu --markdown docs/performance.md

Default case: DFAD, LeNet-5 -> LeNet-5-half, GeneratorA ngf 64 nz 100, 32x32x1
(Fashion-MNIST), batch 256, 1 generator + 5 student updates per round. Weights are random.
The JAX round runs on JAX's default backend in --dtype (the config's compute_dtype; the
teacher in --teacher-dtype), the PyTorch one on --device in float32 (or under bfloat16
autocast with --torch-autocast bfloat16). Both are timed in alternating blocks (JAX,
PyTorch, PyTorch, JAX, ...) so machine load affects both alike; the table gives the median
and mean seconds per round, synthetic images/s, the ratio torch/jax (> 1: dfkd_jax is
faster), the JAX round's FLOPs from XLA's cost analysis and the peak memory of each side.
--peak also measures each framework's matmul peak on its device (dfkd_jax.bench.peak)
and reports the fraction of it the round reaches.

Suites (--suite): a fixed list of cases, each run in a fresh process (so that every case's
peak-memory figures are its own; --in-process runs them here), after measuring the matmul
peaks once (in a fresh process too); one table of all cases. --markdown PATH writes the
table with the command, date, devices, versions and peaks into PATH, replacing only the
suite's own section. The suites:

  gpu        PyTorch on cuda; each case with the JAX round in float32 and in bfloat16
             (PyTorch in float32; --torch-autocast bfloat16 puts its bfloat16 rows under
             autocast): DFAD resnet34:resnet18 cifar10 batch 256 ngf 64 nz 256 (the
             acceptance case), wrn40_2:wrn16_1 cifar10 batch 256 ngf 64 nz 256,
             lenet5:lenet5_half fashion_mnist batch 256 ngf 64 nz 100.
  cpu-small  PyTorch on cpu, float32: lenet5:lenet5_half fashion_mnist batch 64 ngf 16,
             wrn16_2:wrn16_1 fashion_mnist32x3 batch 32 ngf 16 (nz 100).
  cpu-speed  before/after of dfkd_jax.models.fast_conv on CPU, in this one process, each case
             with XLA's own convolutions, with dfkd_jax's, and in PyTorch eager where the project
             has the same computation, in alternating blocks: one 3x3 convolution (batch 256,
             32x32, 128 -> 64) forward / input gradient / weight gradient, the DFAD round of
             lenet5:lenet5_half (ngf 64, batch 256) and of wrn16_2:wrn16_1 (32x32x3, ngf 16,
             batch 64), a LeNet-5 teacher-training epoch, the round of every method's
             Fashion-MNIST config, and the synthesis rounds of ADI (20 pixel steps), CMI (20
             generator steps) and Fast (5 inner + 1 meta step) on WRN-16-2 -> WRN-16-1, 32x32x3,
             batch 64 (--rounds timed calls each; --cases to choose: conv, dfad_lenet, dfad_wrn,
             teacher_epoch, methods, inversion = inversion_adi + inversion_cmi + inversion_fast).

Needs the torch extra: pip install -e .[torch].

Time it on an otherwise idle machine: the table records the 1-minute load average. When
other processes keep the cores busy, PyTorch's OpenMP threads lose their time slices at
every barrier (measured on a 2-core machine under load: a tiny round 50x slower with 2
threads than with 1), which says nothing about either framework; there, pass --threads 1
or set OMP_WAIT_POLICY=PASSIVE. On GPUs JAX preallocates most of the device's memory by
default, leaving PyTorch the rest; set XLA_PYTHON_CLIENT_PREALLOCATE=false if PyTorch runs
out (the setting is recorded with the results).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "fashion_mnist32x3")
DTYPES = ("float32", "bfloat16")
SUITE_NAMES = ("gpu", "cpu-small", "cpu-speed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="dfad", choices=("dfad",), help="the round to time (default: dfad)")
    p.add_argument("--pair", default="lenet5:lenet5_half",
                   help="TEACHER:STUDENT architectures (default: lenet5:lenet5_half; also resnet34:resnet18, "
                        "wrn40_2:wrn16_1, ...)")
    p.add_argument("--dataset", default="fashion_mnist", choices=DATASETS,
                   help="sets the input shape and number of classes (no data is read)")
    p.add_argument("--batch", type=int, default=256, help="synthetic batch size (default: 256)")
    p.add_argument("--ngf", type=int, default=64, help="GeneratorA width (default: 64)")
    p.add_argument("--nz", type=int, default=100, help="latent size (default: 100)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="the JAX round's compute dtype (config.compute_dtype; default: float32)")
    p.add_argument("--teacher-dtype", default="float32", choices=DTYPES,
                   help="the JAX teacher's compute dtype (default: float32, as the engine loads teachers); "
                        "in a suite, used for the bfloat16 cases")
    p.add_argument("--torch-autocast", default="none", choices=("none", "bfloat16"),
                   help="run the PyTorch round's forward passes under torch.autocast in this dtype "
                        "(default: none, i.e. float32); in a suite, applies to the bfloat16 cases only")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per framework (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds per framework first (default: 2)")
    p.add_argument("--blocks", type=int, default=2, help="alternating blocks the timed rounds are split into")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="PyTorch device (default: cpu; in a suite, the suite's: cuda for gpu, cpu for cpu-small)")
    p.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak", action="store_true",
                   help="also measure the matmul peak FLOP/s of both frameworks (after the rounds) and report the "
                        "round's fraction of it")
    p.add_argument("--peak-only", action="store_true", help="only measure the matmul peaks (float32, bfloat16)")
    p.add_argument("--peak-size", type=int, default=0,
                   help="matrix size of the peak measurement (default: 8192 on GPUs; 2048 float32 / 1024 bfloat16 "
                        "on CPUs)")
    p.add_argument("--suite", default=None, choices=SUITE_NAMES,
                   help="run a suite of cases (see above) instead of one case; the case flags are then ignored")
    p.add_argument("--suite-dtypes", default="",
                   help="comma-separated JAX dtypes for every suite case (default: the suite's: gpu float32,bfloat16; "
                        "cpu-small float32)")
    p.add_argument("--in-process", action="store_true", help="run a suite's cases and peaks in this process")
    p.add_argument("--cases", default="",
                   help="cpu-speed only: comma-separated cases (default: all of conv, dfad_lenet, dfad_wrn, "
                        "teacher_epoch, methods, inversion; inversion is inversion_adi, inversion_cmi and "
                        "inversion_fast, each also a case of its own)")
    p.add_argument("--no-peak", action="store_true", help="run a suite without measuring the matmul peaks")
    p.add_argument("--markdown", default="", metavar="PATH",
                   help="write a suite's table into PATH (e.g. docs/performance.md), replacing only its section")
    p.add_argument("--json", default="", metavar="PATH", help="also write the numbers as JSON to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if args.markdown and not args.suite:
        p.error("--markdown needs --suite")
    if args.suite and args.peak_only:
        p.error("--peak-only and --suite exclude each other")
    return args


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {path}")


def _autocast(args):
    return None if args.torch_autocast == "none" else args.torch_autocast


def _run_peaks(args, device: str, log):
    from dfkd_jax.bench.peak import measure_peaks

    return measure_peaks(device, n=args.peak_size or None, log=log)


# -- suites ----------------------------------------------------------------------------------------


def _child(cmd: list[str], log) -> None:
    """Run ``cmd``, passing its output lines to ``log``; RuntimeError with its last line if it fails."""
    tail: collections.deque[str] = collections.deque(maxlen=20)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log("  | " + line)
        rc = proc.wait()
    if rc != 0:
        last = next((l for l in reversed(tail) if l.strip()), "")
        raise RuntimeError(f"exit status {rc}: {last.strip()}")


def _case_argv(args, case, device: str) -> list[str]:
    bf16 = case.dtype == "bfloat16"
    argv = ["--method", case.method, "--pair", case.pair, "--dataset", case.dataset, "--batch", str(case.batch),
            "--ngf", str(case.ngf), "--nz", str(case.nz), "--dtype", case.dtype,
            "--teacher-dtype", args.teacher_dtype if bf16 else "float32",
            "--torch-autocast", args.torch_autocast if bf16 else "none",
            "--rounds", str(args.rounds), "--warmup", str(args.warmup), "--blocks", str(args.blocks),
            "--device", device, "--seed", str(args.seed)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def run_cpu_speed_cli(args, argv, log) -> dict:
    from dfkd_jax import bench
    from dfkd_jax.bench import cpu_speed

    cases = [c.strip() for c in args.cases.split(",") if c.strip()] or cpu_speed.CASES
    report = cpu_speed.run_cpu_speed(cases, reps=args.rounds, warmup=args.warmup, threads=args.threads or None,
                                     log=log)
    command = shlex.join(["python", "tools/benchmark.py", *argv])
    report["command"] = command
    print(cpu_speed.format_cpu_speed(report))
    if args.markdown:
        bench.write_markdown_section(args.markdown, "cpu-speed", cpu_speed.cpu_speed_markdown(report, command))
        print(f"wrote the cpu-speed section of {args.markdown}")
    return report


def run_suite_cli(args, argv, log) -> dict:
    from dfkd_jax import bench

    if args.suite == "cpu-speed":
        return run_cpu_speed_cli(args, argv, log)

    spec = bench.SUITES[args.suite]
    device = args.device or spec["device"]
    dtypes = [d.strip() for d in args.suite_dtypes.split(",") if d.strip()] or None
    cases = bench.suite_cases(args.suite, dtypes)
    here = os.path.abspath(__file__)

    with tempfile.TemporaryDirectory(prefix="dfkd_bench_") as tmp:
        peaks = None
        if not args.no_peak:
            log(f"measuring the matmul peaks (jax, torch on {device})")
            if args.in_process:
                peaks = _run_peaks(args, device, log)
            else:
                path = os.path.join(tmp, "peaks.json")
                cmd = [sys.executable, here, "--peak-only", "--device", device, "--json", path, "--quiet"]
                if args.peak_size:
                    cmd += ["--peak-size", str(args.peak_size)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                try:
                    _child(cmd, log)
                    with open(path) as f:
                        peaks = json.load(f)
                except RuntimeError as e:
                    log(f"the peak measurement failed: {e}")

        counter = itertools.count()

        def run_case(case):
            case_argv = _case_argv(args, case, device)
            if args.in_process:
                return single_case(parse_args(case_argv), log)
            path = os.path.join(tmp, f"case_{next(counter)}.json")
            _child([sys.executable, here, *case_argv, "--json", path] + (["--quiet"] if args.quiet else []), log)
            with open(path) as f:
                return json.load(f)

        settings = {"PyTorch device": device, "threads": args.threads or "all cores",
                    "bfloat16 cases": f"JAX teacher in {args.teacher_dtype}, PyTorch autocast {args.torch_autocast}",
                    "processes": "this one" if args.in_process else "a fresh one per case"}
        suite = bench.run_suite(cases, run_case, name=args.suite, peaks=peaks, settings=settings, log=log)
    suite["command"] = shlex.join(["python", "tools/benchmark.py", *argv])
    print(bench.format_peaks(suite["peaks"]))
    print()
    print(bench.format_suite_table(suite))
    print()
    print("\n".join(bench.SUITE_LEGEND))
    if args.markdown:
        bench.write_markdown_section(args.markdown, args.suite, bench.suite_markdown(suite))
        print(f"wrote the {args.suite} section of {args.markdown}")
    return suite


# -- one case ----------------------------------------------------------------------------------------


def single_case(args, log) -> dict:
    from dfkd_jax.bench import run_benchmark

    report = run_benchmark(method=args.method, pair=args.pair, dataset=args.dataset, batch=args.batch,
                           ngf=args.ngf, nz=args.nz, rounds=args.rounds, warmup=args.warmup, blocks=args.blocks,
                           device=args.device or "cpu", seed=args.seed, threads=args.threads or None, log=log,
                           dtype=args.dtype, teacher_dtype=args.teacher_dtype, torch_autocast=_autocast(args))
    if args.peak:
        report["peaks"] = _run_peaks(args, args.device or "cpu", log)
    return report


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        if args.suite:
            result = run_suite_cli(args, argv, log)
        elif args.peak_only:
            from dfkd_jax.bench import format_peaks
            from dfkd_jax.bench.torch_round import setup_torch

            setup_torch(args.device or "cpu", args.threads or None)
            result = _run_peaks(args, args.device or "cpu", log)
            print(format_peaks(result))
        else:
            from dfkd_jax.bench import format_report

            result = single_case(args, log)
            print(format_report(result))
    except (ImportError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    if args.json:
        _write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
