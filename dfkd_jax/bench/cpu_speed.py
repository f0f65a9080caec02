"""CPU speed before and after ``dfkd_jax.models.fast_conv``, against PyTorch eager, in one process.

    python tools/benchmark.py --suite cpu-speed [--markdown docs/performance.md]

Every case times its variants in alternating blocks in this one process (A B C, C B A,
A B C, ...), so that load on the machine affects all of them alike:

- ``xla``: dfkd_jax with XLA's own convolutions (``fast_conv`` mode ``'xla'``: the code
  before the fast convolutions);
- ``dfkd_jax``: dfkd_jax as it runs by default (mode ``'auto'``: on CPU the matrix-product
  formulations of ``fast_conv``);
- ``torch``: PyTorch eager, the same computation (where the project has it in PyTorch).

Cases (``CASES``): one 3x3 convolution (batch 256, 32x32, 128 -> 64 channels) forward,
input gradient and weight gradient; the DFAD round of the LeNet-5 -> LeNet-5-half pair
with GeneratorA ngf 64 at batch 256; the DFAD round of the CIFAR-shaped WRN-16-2 ->
WRN-16-1 pair (32x32x3) at small width; one epoch of the teacher's supervised training
(LeNet-5, Fashion-MNIST's 60,000 images in batches of 128, Adam); the round of every
method's Fashion-MNIST config; the ADI, CMI and Fast synthesis rounds on the WRN-16-2 teacher
(``dfkd_jax.bench.inversion``: ``inversion`` runs the three, ``inversion_adi`` / ``_cmi`` /
``_fast`` one). Weights and inputs are random: the cost of these
computations does not depend on their values (the teacher epoch's batches are random
arrays already on the device; the real loader adds its host-to-device copies to both
JAX variants alike). The JAX variants report their compile time and XLA's buffer bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib.util
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax.bench import harness, torch_round
from dfkd_jax.models import fast_conv

VARIANTS = ("xla", "dfkd_jax", "torch")
CONV = dict(batch=256, size=32, cin=128, cout=64, kernel=3)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


@dataclasses.dataclass
class Variant:
    """One way of doing a case's work: ``run()`` does it once and returns the seconds it took."""

    name: str
    run: Callable[[], float]
    compile_s: float | None = None
    xla_bytes: int | None = None


@dataclasses.dataclass
class CaseResult:
    case: str
    unit: str  # what one timed call is: 'call', 'round', 'epoch'
    flops: float | None  # per call, where known
    times: dict[str, list[float]]
    compile_s: dict[str, float | None]
    xla_bytes: dict[str, int | None]

    def median(self, name: str) -> float | None:
        t = self.times.get(name)
        return statistics.median(t) if t else None


def alternate(variants: list[Variant], reps: int, warmup: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """``warmup`` untimed calls of each variant, then ``reps`` timed ones each, in alternating order."""
    for v in variants:
        for _ in range(warmup):
            v.run()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(reps):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            times[v.name].append(v.run())
        log("  rep %d: %s" % (r + 1, ", ".join(f"{k} {t[-1]:.3f} s" for k, t in times.items())))
    return times


def _timed(fn: Callable[[], Any]) -> Callable[[], float]:
    def run():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - t0
    return run


def _compiled(fn, *args):
    """``(compiled, seconds to lower and compile, XLA buffer bytes)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0, harness.xla_memory(compiled)["total_bytes"]


def _jax_variant(name: str, mode: str, build: Callable[[], tuple[Callable[[], Any], float, int | None]]) -> Variant:
    with fast_conv.using(mode):  # traced and compiled under the mode
        run, compile_s, xla_bytes = build()
    return Variant(name, _timed(run), compile_s, xla_bytes)


# -- the cases ---------------------------------------------------------------------------------------

def conv_cases(torch, reps: int, warmup: int, log) -> list[CaseResult]:
    n, s, ci, co, k = (CONV[key] for key in ("batch", "size", "cin", "cout", "kernel"))
    p = k // 2
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (n, s, s, ci))
    w = jax.random.normal(kw, (k, k, ci, co)) * 0.05
    dy = jax.random.normal(kd, (n, s, s, co))
    flops = 2.0 * n * s * s * ci * co * k * k
    tx = torch.randn(n, ci, s, s)
    tw = torch.randn(co, ci, k, k) * 0.05
    tdy = torch.randn(n, co, s, s)

    def conv(x_, w_):
        return fast_conv.conv_general_dilated(x_, w_, (1, 1), ((p, p), (p, p)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))

    parts = {
        "forward": lambda x_, w_, dy_: conv(x_, w_),
        "input gradient": lambda x_, w_, dy_: jax.vjp(lambda a: conv(a, w_), x_)[1](dy_)[0],
        "weight gradient": lambda x_, w_, dy_: jax.vjp(lambda b: conv(x_, b), w_)[1](dy_)[0],
    }
    results = []
    for part, fn in parts.items():
        log(f"conv {part}")

        def build(fn=fn):
            c, cs, mem = _compiled(lambda a, b, d: fn(a, b, d), x, w, dy)
            return (lambda: c(x, w, dy)), cs, mem

        if part == "forward":
            def torch_run():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, padding=p)
        else:
            def torch_run(mask=(part == "input gradient", False, part == "weight gradient")):
                return torch.ops.aten.convolution_backward(tdy, tx, tw, None, [1, 1], [p, p], [1, 1], False,
                                                           [0, 0], 1, list(mask))
        variants = [_jax_variant("xla", "xla", build), _jax_variant("dfkd_jax", "auto", build),
                    Variant("torch", _timed_torch(torch_run))]
        label = f"conv {part}: 3x3, batch {n}, {s}x{s}, {ci} -> {co} channels"
        results.append(_result(label, "call", flops, variants, alternate(variants, reps, warmup, log)))
    return results


def _timed_torch(fn: Callable[[], Any]) -> Callable[[], float]:
    def run():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def _result(label, unit, flops, variants, times) -> CaseResult:
    return CaseResult(label, unit, flops, times, {v.name: v.compile_s for v in variants},
                      {v.name: v.xla_bytes for v in variants})


def dfad_round_case(label: str, pair: str, dataset: str, batch: int, ngf: int, nz: int, reps: int, warmup: int,
                    log, torch_threads: int | None) -> CaseResult:
    """The DFAD round (1 generator + 5 student updates) in the three variants."""
    teacher_arch, student_arch = harness.parse_pair(pair)
    cfg = harness.bench_config("dfad", teacher_arch, student_arch, dataset, batch, ngf, nz, rounds=100)
    log(label)
    sides = {}
    for name, mode in (("xla", "xla"), ("dfkd_jax", "auto")):
        with fast_conv.using(mode):
            sides[name] = harness._JaxSide(cfg, 0, log)
    torch_side = harness._TorchSide(cfg, "cpu", 0, torch_threads)
    variants = [Variant(name, side.round, side.compile_s, side.xla_memory["total_bytes"]) for name, side in sides.items()]
    variants.append(Variant("torch", torch_side.round))
    return _result(label, "round", sides["dfkd_jax"].flops, variants, alternate(variants, reps, warmup, log))


def teacher_epoch_case(torch, reps: int, warmup: int, log, arch: str = "lenet5", batch: int = 128,
                       examples: int = 60000, lr: float = 2e-3) -> CaseResult:
    """One epoch of supervised training (``dfkd_jax.supervised.make_train_step``; Adam; cross-entropy)."""
    import optax

    from dfkd_jax.core.state import ModelState
    from dfkd_jax.models import build_model
    from dfkd_jax.supervised import make_train_step

    steps = examples // batch
    label = f"teacher epoch: {arch}, {steps} steps of batch {batch}, Adam"
    log(label)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((8, batch, 32, 32, 1), np.float32))  # cycled through
    ys = jnp.asarray(rng.integers(0, 10, (8, batch)).astype(np.int32))
    model = build_model(arch, 10)
    tx = optax.adam(lr)

    def build():
        v = model.init(jax.random.PRNGKey(0), xs[0], train=False)
        state = ModelState(v["params"], v.get("batch_stats", {}), tx.init(v["params"]))
        step = jax.jit(make_train_step(model, tx), donate_argnums=(0,))
        t0 = time.perf_counter()
        compiled = step.lower(state, xs[0], ys[0], jax.random.PRNGKey(0)).compile()
        compile_s = time.perf_counter() - t0
        holder = [state]

        def epoch():
            st, loss = holder[0], None
            for i in range(steps):
                st, loss = compiled(st, xs[i % 8], ys[i % 8], jax.random.PRNGKey(i))
            holder[0] = st
            return loss

        return epoch, compile_s, harness.xla_memory(compiled)["total_bytes"]

    tmodel = torch_round.build_model(arch, 10, 1)
    opt = torch.optim.Adam(tmodel.parameters(), lr=lr)
    txs = [torch.randn(batch, 1, 32, 32) for _ in range(8)]
    tys = [torch.randint(0, 10, (batch,)) for _ in range(8)]

    def torch_epoch():
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(txs[i % 8]), tys[i % 8])
            loss.backward()
            opt.step()

    variants = [_jax_variant("xla", "xla", build), _jax_variant("dfkd_jax", "auto", build),
                Variant("torch", _timed_torch(torch_epoch))]
    return _result(label, "epoch", None, variants, alternate(variants, reps, warmup, log))


def method_configs() -> list[str]:
    """The Fashion-MNIST config of every method (not the default, which points at one of them)."""
    paths = sorted(glob.glob(os.path.join(CONFIG_DIR, "fashion_mnist", "*.py")))
    return [p for p in paths if os.path.basename(p) not in ("default.py", "lenet_pair.py", "__init__.py")]


def load_config(path: str):
    """A config file's ``get_config()`` by path (no ``:arg``), with the progress bar off: the benchmarks' loader."""
    spec = importlib.util.spec_from_file_location(f"bench_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    cfg.train.progress = False
    return cfg


def method_round_case(path: str, reps: int, warmup: int, log) -> CaseResult:
    """A method config's round with a random teacher, XLA's convolutions against the default."""
    from dfkd_jax.engine.distiller import Distiller

    cfg = load_config(path)
    label = f"{cfg.method} round ({os.path.relpath(path, os.path.dirname(CONFIG_DIR))})"
    log(label)
    teacher = harness.random_teacher(cfg.teacher.arch, cfg.data.dataset)

    def build():
        d = Distiller.from_config(cfg, teacher)
        holder = [d.init(cfg.seed)]
        t0 = time.perf_counter()
        compiled = d._round.lower(holder[0], d.teacher_variables).compile()
        compile_s = time.perf_counter() - t0

        def run():
            holder[0], m = compiled(holder[0], d.teacher_variables)
            return holder[0], m

        return run, compile_s, harness.xla_memory(compiled)["total_bytes"]

    variants = [_jax_variant("xla", "xla", build), _jax_variant("dfkd_jax", "auto", build)]
    return _result(label, "round", None, variants, alternate(variants, reps, warmup, log))


INVERSION_CASES = {"inversion_adi": "adi", "inversion_cmi": "cmi", "inversion_fast": "fast"}
CASES = ("conv", "dfad_lenet", "dfad_wrn", "teacher_epoch", "methods", "inversion", *INVERSION_CASES)


def run_cpu_speed(cases=CASES, reps: int = 5, warmup: int = 1, threads: int | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every case of ``cases``; a report dict (``format_cpu_speed``, ``cpu_speed_markdown``)."""
    log = log or (lambda msg: print(msg, flush=True))
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"Unknown cpu-speed cases {sorted(unknown)}. Valid: {', '.join(CASES)}.")
    torch = torch_round.setup_torch("cpu", threads)
    load_start = harness._loadavg()
    results: list[CaseResult] = []
    if "conv" in cases:
        results += conv_cases(torch, reps, warmup, log)
    if "dfad_lenet" in cases:
        results.append(dfad_round_case("DFAD round: LeNet-5 -> LeNet-5-half, GeneratorA ngf 64, batch 256, 32x32x1",
                                       "lenet5:lenet5_half", "fashion_mnist", 256, 64, 100, reps, warmup, log, threads))
    if "dfad_wrn" in cases:
        results.append(dfad_round_case("DFAD round: WRN-16-2 -> WRN-16-1, GeneratorA ngf 16, batch 64, 32x32x3",
                                       "wrn16_2:wrn16_1", "fashion_mnist32x3", 64, 16, 100, reps, warmup, log,
                                       threads))
    if "teacher_epoch" in cases:
        results.append(teacher_epoch_case(torch, max(2, reps // 2), warmup, log))
    if "methods" in cases:
        for path in method_configs():
            results.append(method_round_case(path, reps, warmup, log))
    for case, method in INVERSION_CASES.items():  # the inversion rounds (dfkd_jax.bench.inversion); 'inversion': all
        if case in cases or "inversion" in cases:
            from dfkd_jax.bench.inversion import inversion_case
            results.append(inversion_case(torch, max(2, reps // 2), warmup, log, method))
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": harness._cpu_name(), "cores": torch_round.cpu_cores(), "torch_threads": torch.get_num_threads(),
            "loadavg_1min": [load_start, harness._loadavg()], "versions": harness._versions(torch.__version__),
            "reps": reps, "warmup": warmup, "cases": [dataclasses.asdict(r) for r in results]}


# -- tables --------------------------------------------------------------------------------------------

def _median(times: list[float] | None) -> float | None:
    return statistics.median(times) if times else None


def cpu_speed_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in report["cases"]:
        med = {name: _median(c["times"].get(name)) for name in VARIANTS}
        gf = {name: (c["flops"] / m / 1e9 if c["flops"] and m else None) for name, m in med.items()}
        before, after, torch_s = med["xla"], med["dfkd_jax"], med["torch"]
        rows.append([
            c["case"], c["unit"],
            harness._fmt(before, ".3f"), harness._fmt(after, ".3f"), harness._fmt(torch_s, ".3f"),
            harness._fmt(harness._ratio(before, after), ".2f", unit="x"),
            harness._fmt(harness._ratio(torch_s, after), ".2f", unit="x"),
            " / ".join(harness._fmt(gf[n], ".1f") for n in VARIANTS) if c["flops"] else "-",
            " / ".join(harness._fmt(c["compile_s"].get(n), ".1f") for n in ("xla", "dfkd_jax")),
            " / ".join(harness._bytes(c["xla_bytes"].get(n)) for n in ("xla", "dfkd_jax")),
        ])
    return rows


HEADER = ["case", "per", "before s (XLA convs)", "after s (dfkd_jax)", "PyTorch eager s", "speed-up",
          "vs PyTorch", "GFLOP/s before / after / torch", "compile s before / after", "XLA buffers before / after"]


def format_cpu_speed(report: dict[str, Any]) -> str:
    rows = [HEADER] + cpu_speed_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def cpu_speed_markdown(report: dict[str, Any], command: str) -> str:
    v = report["versions"]
    lines = [
        f"`{command}` on {report['cpu']} ({report['cores']} cores; PyTorch {report['torch_threads']} threads), "
        f"{report['date'][:10]}; JAX {v['jax']}, PyTorch {v['torch']}; 1-minute load average "
        f"{report['loadavg_1min'][0]} at the start, {report['loadavg_1min'][1]} at the end; medians of "
        f"{report['reps']} timed calls per variant in alternating blocks after {report['warmup']} warmup call(s).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cpu_speed_rows(report)]
    lines += ["", "Before: dfkd_jax with XLA's own convolutions (`DFKD_JAX_CONV=xla`); after: the default "
                  "(`dfkd_jax.models.fast_conv` on CPU). Speed-up = before / after; vs PyTorch = PyTorch / after "
                  "(> 1: dfkd_jax is faster). XLA buffers: arguments + outputs + temporaries of the compiled call."]
    return "\n".join(lines)
