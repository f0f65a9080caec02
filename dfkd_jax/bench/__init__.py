"""Speed of a dfkd_jax round against the same round in PyTorch eager mode.

    from dfkd_jax.bench import run_benchmark, format_report
    report = run_benchmark(batch=256, rounds=5, warmup=1)
    print(format_report(report))

or ``python tools/benchmark.py`` (see its ``--help``). Both rounds run in this one
process, in alternating blocks (JAX, PyTorch, PyTorch, JAX, ...), so that a change in
machine load during the run affects both alike. Weights are random (the cost of a
round does not depend on the teacher being good): the JAX teacher and state are
drawn here (``random_teacher``, ``random_state``), the PyTorch models keep torch's
default initialisation. The PyTorch round is ``dfkd_jax.bench.torch_round.DFADRound``
(torch is an optional extra: ``pip install -e .[torch]``).

Reported per framework: the median and mean seconds per round over ``rounds`` timed
rounds (after ``warmup`` untimed ones, and for JAX after compiling), and synthetic
images per second (``batch * (generator steps + student steps)`` images per round).
For JAX also the compile time (lowering + XLA compilation of the round) and the
round's FLOPs from XLA's cost analysis of the compiled program (XLA counts one device's
share of the partitioned program; the total is that times the mesh's devices), with the
achieved FLOP/s; for
PyTorch the FLOPs ``torch.utils.flop_counter`` counts in the first warmup round
(convolutions and matrix products only). ``ratio_torch_over_jax`` > 1 means the
dfkd_jax round is faster.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax.bench import torch_round
from dfkd_jax.data.specs import get_spec
from dfkd_jax.models import build_model
from dfkd_jax.teacher import Teacher, TeacherMeta

__all__ = ["random_teacher", "random_state", "bench_config", "xla_flops", "run_benchmark", "format_report", "parse_pair"]

METHODS = ("dfad",)  # the methods the PyTorch reference round implements


def _random_like(tree, rng: np.random.Generator, collection: str = ""):
    """PyTorch-default-like random variables for a tree of shapes (no XLA compilation needed).

    Kernels and the biases next to them: U(+-1/sqrt(fan_in)); BatchNorm: scale 1, bias 0,
    running mean 0, running variance 1.
    """
    out = {}
    kernel = tree.get("kernel")
    fan_in = int(np.prod(kernel.shape[:-1])) if kernel is not None else None
    for name, leaf in tree.items():
        coll = collection or name
        if isinstance(leaf, Mapping):
            out[name] = _random_like(leaf, rng, coll)
            continue
        if coll == "batch_stats" or (name in ("scale", "bias") and fan_in is None):
            value = np.ones(leaf.shape) if name in ("var", "scale") else np.zeros(leaf.shape)
        else:
            bound = 1.0 / np.sqrt(fan_in or 1)
            value = rng.uniform(-bound, bound, leaf.shape)
        out[name] = value.astype(leaf.dtype)
    return out


def random_teacher(arch: str = "lenet5", dataset: str = "fashion_mnist", seed: int = 0) -> Teacher:
    """A ``Teacher`` (registry model ``arch``) with random weights, for ``dataset``'s input shape and classes.

    The weights are drawn with numpy from the shapes (``jax.eval_shape``), which costs no
    XLA compilation (compiling a jitted ``model.init`` takes seconds on small CPUs).
    """
    spec = get_spec(dataset)
    model = build_model(arch, spec.num_classes)
    x = jnp.zeros((1, *spec.image_shape), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    variables = _random_like(shapes, np.random.default_rng(seed))
    meta = TeacherMeta(arch, dataset, spec.num_classes, spec.image_shape, spec.mean, spec.std,
                       source=f"random initialisation (seed {seed}), for benchmarks")
    return Teacher(model, variables, meta)


def random_state(distiller, seed: int = 0):
    """A replicated ``DistillState`` with random weights drawn like ``random_teacher``'s.

    It has the structure, dtypes and shardings of ``distiller.init(seed)`` (the jitted round
    takes either) without compiling the engine's initialiser, which on small CPUs takes
    longer than compiling the round itself.
    """
    from dfkd_jax.engine import sharding
    from dfkd_jax.engine.state import DistillState, ModelState

    shapes = distiller.abstract_state()
    rng = np.random.default_rng(seed)

    def model_state(abstract, tx):
        v = _random_like({"params": abstract.params, "batch_stats": abstract.batch_stats}, rng)
        return ModelState(params=v["params"], batch_stats=v["batch_stats"], opt_state=jax.jit(tx.init)(v["params"]))

    state = DistillState(round=np.zeros(shapes.round.shape, shapes.round.dtype),
                         rng=np.asarray(jax.random.PRNGKey(seed), shapes.rng.dtype),
                         generator=model_state(shapes.generator, distiller.tx_g),
                         student=model_state(shapes.student, distiller.tx_s))
    return sharding.replicate_tree(state, distiller.mesh)


def parse_pair(pair: str) -> tuple[str, str]:
    """``'lenet5:lenet5_half'`` -> ``('lenet5', 'lenet5_half')`` (teacher, student)."""
    parts = pair.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair must be TEACHER:STUDENT (e.g. lenet5:lenet5_half), not {pair!r}.")
    return parts[0], parts[1]


def bench_config(method: str = "dfad", teacher: str = "lenet5", student: str = "lenet5_half",
                 dataset: str = "fashion_mnist", batch: int = 256, ngf: int = 64, nz: int = 100, rounds: int = 100):
    """The method's published config with the benchmark's sizes and constant learning rates."""
    from dfkd_jax import config as config_lib
    from dfkd_jax import methods

    if method not in METHODS:
        raise ValueError(f"The benchmark has a PyTorch reference round for {', '.join(METHODS)} only, not {method!r}.")
    c = methods.configure(config_lib.base_config(), method)
    c.data.dataset = dataset
    c.teacher.arch, c.student.arch = teacher, student
    c.generator.arch, c.generator.nz, c.generator.ngf = "dafl", int(nz), int(ngf)
    c.generator.schedule = c.student.schedule = "constant"
    c.train.batch_size = int(batch)
    c.train.rounds = max(int(rounds), 1)
    c.train.progress = False
    config_lib.validate(c)
    return c


def xla_flops(compiled) -> float | None:
    """FLOPs of a compiled JAX computation from XLA's cost analysis (``None`` when unavailable).

    ``cost_analysis()`` returns a dict, a list of dicts (one per program, older JAX) or ``None``.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if analysis is None:
        return None
    entries = analysis if isinstance(analysis, (list, tuple)) else [analysis]
    values = [float(e["flops"]) for e in entries if e and e.get("flops") is not None and float(e["flops"]) >= 0]
    return float(sum(values)) if values else None


def _blocks(rounds: int, blocks: int) -> list[int]:
    blocks = max(1, min(int(blocks), int(rounds)))
    base, extra = divmod(int(rounds), blocks)
    return [base + (1 if i < extra else 0) for i in range(blocks)]


def _summary(times: list[float], images_per_round: int) -> dict[str, Any]:
    median = statistics.median(times) if times else float("nan")
    return {"round_s": times, "median_s": median, "mean_s": statistics.fmean(times) if times else float("nan"),
            "min_s": min(times) if times else float("nan"), "images_per_s": images_per_round / median}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


class _JaxSide:
    def __init__(self, cfg, seed: int, log: Callable[[str], None]):
        from dfkd_jax.engine.distiller import Distiller

        teacher = random_teacher(cfg.teacher.arch, cfg.data.dataset, seed)
        self.d = Distiller.from_config(cfg, teacher)
        self.state = random_state(self.d, seed)
        t0 = time.perf_counter()
        lowered = self.d._round.lower(self.state, self.d.teacher_variables)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.devices = int(self.d.mesh.devices.size)
        # XLA analyses the SPMD-partitioned program, i.e. one device's share of the round
        self.flops_per_device = xla_flops(self.compiled)
        self.flops = None if self.flops_per_device is None else self.flops_per_device * self.devices
        self.metrics = None
        log(f"jax: compiled the round in {self.compile_s:.1f} s")

    def round(self) -> float:
        t0 = time.perf_counter()
        self.state, self.metrics = self.compiled(self.state, self.d.teacher_variables)
        jax.block_until_ready((self.state, self.metrics))
        return time.perf_counter() - t0

    def losses(self) -> dict[str, float]:
        m = jax.device_get(self.metrics) if self.metrics is not None else {}
        return {k: float(m[k]) for k in ("generator/loss", "student/loss") if k in m}


class _TorchSide:
    def __init__(self, cfg, device: str, seed: int, threads: int | None):
        torch = torch_round.setup_torch(device, threads)
        self.torch = torch
        torch.manual_seed(seed)
        spec = get_spec(cfg.data.dataset)
        h, _, c = spec.image_shape
        teacher = torch_round.build_model(cfg.teacher.arch, spec.num_classes, c)
        student = torch_round.build_model(cfg.student.arch, spec.num_classes, c)
        generator = torch_round.build_generator(int(cfg.generator.nz), int(cfg.generator.ngf), c, h)
        self.r = torch_round.DFADRound.from_config(cfg, teacher, student, generator, device=device)
        self.out = None
        self.flops = None

    def round(self, count_flops: bool = False) -> float:
        t0 = time.perf_counter()
        if count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                self.out = self.r.round()
            self.flops = float(counter.get_total_flops())
        else:
            self.out = self.r.round()
        self.r.synchronize()
        return time.perf_counter() - t0

    def losses(self) -> dict[str, float]:
        if self.out is None:
            return {}
        return {"generator/loss": float(self.out["generator/loss"]),
                "student/loss": float(self.out["student/loss"].mean())}


def run_benchmark(method: str = "dfad", pair: str = "lenet5:lenet5_half", dataset: str = "fashion_mnist",
                  batch: int = 256, ngf: int = 64, nz: int = 100, rounds: int = 5, warmup: int = 1,
                  blocks: int = 2, device: str = "cpu", seed: int = 0, threads: int | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time ``rounds`` JAX rounds and ``rounds`` PyTorch rounds in alternating blocks; a report dict.

    The timed rounds are split into ``blocks`` blocks per framework, run in the order
    JAX, PyTorch, PyTorch, JAX, JAX, ... after ``warmup`` untimed rounds of each.
    ``device`` is the PyTorch device (``cpu`` or ``cuda``); JAX uses its default backend.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if int(rounds) < 1:
        raise ValueError("rounds must be at least 1.")
    teacher_arch, student_arch = parse_pair(pair)
    load_start = _loadavg()
    cfg = bench_config(method, teacher_arch, student_arch, dataset, batch, ngf, nz, rounds=int(warmup) + int(rounds))
    images_per_round = int(batch) * (int(cfg.generator.steps) + int(cfg.student.steps))

    torch_side = _TorchSide(cfg, device, seed, threads)  # import torch first: fail fast without it
    jax_side = _JaxSide(cfg, seed, log)
    for i in range(int(warmup)):
        t_jax = jax_side.round()
        t_torch = torch_side.round(count_flops=i == 0)
        log(f"warmup {i + 1}/{warmup}: jax {t_jax:.3f} s, torch {t_torch:.3f} s")

    times: dict[str, list[float]] = {"jax": [], "torch": []}
    sides = {"jax": jax_side, "torch": torch_side}
    order = []
    for b, n in enumerate(_blocks(rounds, blocks)):
        for name in (("jax", "torch") if b % 2 == 0 else ("torch", "jax")):
            block = [sides[name].round() for _ in range(n)]
            times[name] += block
            order.append(name)
            log(f"block {b + 1} {name}: " + ", ".join(f"{t:.3f}" for t in block) + " s/round")

    jax_sum = _summary(times["jax"], images_per_round)
    torch_sum = _summary(times["torch"], images_per_round)
    jax_sum.update(compile_s=jax_side.compile_s, flops_per_round=jax_side.flops,
                   flops_per_round_per_device=jax_side.flops_per_device, mesh_devices=jax_side.devices,
                   flops_per_s=(jax_side.flops / jax_sum["median_s"]) if jax_side.flops else None,
                   last_losses=jax_side.losses())
    torch_sum.update(flops_per_round=torch_side.flops,
                     flops_per_s=(torch_side.flops / torch_sum["median_s"]) if torch_side.flops else None,
                     last_losses=torch_side.losses())
    torch = torch_side.torch
    jdev = jax.devices()[0]
    return {
        "config": {"method": method, "teacher": teacher_arch, "student": student_arch, "dataset": dataset,
                   "input_shape": list(get_spec(dataset).image_shape), "generator": "dafl (GeneratorA)",
                   "batch": int(batch), "ngf": int(ngf), "nz": int(nz), "generator_steps": int(cfg.generator.steps),
                   "student_steps": int(cfg.student.steps), "rounds": int(rounds), "warmup": int(warmup),
                   "blocks": len(_blocks(rounds, blocks)), "seed": int(seed), "order": order},
        "device": {"jax_backend": jax.default_backend(), "jax_device_kind": jdev.device_kind,
                   "jax_device_count": jax.device_count(), "torch_device": str(torch_side.r.device),
                   "torch_device_name": (torch.cuda.get_device_name(torch_side.r.device)
                                         if torch_side.r.device.type == "cuda" else _cpu_name()),
                   "torch_threads": torch.get_num_threads(), "cpu": _cpu_name(),
                   "cpu_cores": torch_round.cpu_cores(),
                   "platform": platform.platform(), "loadavg_1min_start": load_start,
                   "loadavg_1min_end": _loadavg()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": _version("jaxlib"),
                     "flax": _version("flax"), "optax": _version("optax"), "torch": torch.__version__,
                     "numpy": np.__version__},
        "images_per_round": images_per_round,
        "jax": jax_sum,
        "torch": torch_sum,
        "ratio_torch_over_jax": torch_sum["median_s"] / jax_sum["median_s"],
    }


def _fmt(v, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    return "-" if v is None else f"{v / scale:{spec}}{unit}"


def format_report(r: dict[str, Any]) -> str:
    """A small text table of a ``run_benchmark`` report."""
    c, dv, j, t = r["config"], r["device"], r["jax"], r["torch"]
    h, w, ch = c["input_shape"]
    lines = [
        f"{c['method']}: {c['teacher']} -> {c['student']}, GeneratorA ngf {c['ngf']} nz {c['nz']}, "
        f"{h}x{w}x{ch}, batch {c['batch']}, {c['generator_steps']} + {c['student_steps']} steps/round, "
        f"{c['rounds']} timed rounds in {c['blocks']} alternating blocks (warmup {c['warmup']})",
        f"JAX {r['versions']['jax']} on {dv['jax_backend']} ({dv['jax_device_count']} x {dv['jax_device_kind']}); "
        f"PyTorch {r['versions']['torch']} on {dv['torch_device']} ({dv['torch_device_name']}, "
        f"{dv['torch_threads']} threads); 1-min load average {dv.get('loadavg_1min_start')} at the start, "
        f"{dv.get('loadavg_1min_end')} at the end ({dv.get('cpu_cores')} cores)",
        "",
        f"{'':<22}{'dfkd_jax (jit)':>16}{'PyTorch eager':>16}",
        f"{'compile s':<22}{_fmt(j['compile_s'], '.1f'):>16}{'-':>16}",
        f"{'median s/round':<22}{_fmt(j['median_s']):>16}{_fmt(t['median_s']):>16}",
        f"{'mean s/round':<22}{_fmt(j['mean_s']):>16}{_fmt(t['mean_s']):>16}",
        f"{'images/s':<22}{_fmt(j['images_per_s'], '.0f'):>16}{_fmt(t['images_per_s'], '.0f'):>16}",
        f"{'GFLOP/round':<22}{_fmt(j['flops_per_round'], '.2f', 1e9):>16}{_fmt(t['flops_per_round'], '.2f', 1e9):>16}",
        f"{'GFLOP/s':<22}{_fmt(j['flops_per_s'], '.1f', 1e9):>16}{_fmt(t['flops_per_s'], '.1f', 1e9):>16}",
        "",
        f"ratio torch/jax (median): {r['ratio_torch_over_jax']:.3f}  (> 1: dfkd_jax is faster); "
        f"{r['images_per_round']} synthetic images per round",
        "FLOPs: JAX from XLA's cost analysis of the compiled round; PyTorch from torch.utils.flop_counter "
        "(convolutions and matmuls only).",
    ]
    return "\n".join(lines)
