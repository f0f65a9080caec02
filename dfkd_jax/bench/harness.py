"""Speed of a dfkd_jax round against the same round in PyTorch eager mode.

    from dfkd_jax.bench import run_benchmark, format_report      # (dfkd_jax.bench.harness)
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

``dtype='bfloat16'`` sets the config's ``compute_dtype`` (generator and student compute in
bfloat16, parameters stay float32); the teacher is built in ``teacher_dtype`` (default
float32, as ``dfkd_jax.engine.loop`` loads teachers). ``torch_autocast='bfloat16'`` runs the
PyTorch round's forward passes under ``torch.autocast``.

Memory (``report[side]['memory']``, see ``MEMORY_NOTES``): for JAX, the compiled round's
buffers from XLA's ``memory_analysis()`` and, where the backend keeps allocator statistics
(GPUs, TPUs), the device's ``peak_bytes_in_use``; for PyTorch on CUDA
``torch.cuda.max_memory_allocated()`` over the timed rounds; on CPUs the increase of the
process's maximum resident set size (``resource.getrusage``) over each framework's phase.
The PyTorch phase (building its models, its warmup rounds) comes first, so its RSS
increase is measured from the baseline after the imports; the JAX phase follows and its
RSS increase counts only what goes beyond the PyTorch phase's high-water mark (a lower
bound): on CPUs the XLA buffer figure is the one to compare.

The suite (``SUITES``, ``run_suite``, ``format_suite_table``, ``suite_markdown``,
``write_markdown_section``) runs a list of cases and tabulates them with the matmul peaks
of ``dfkd_jax.bench.peak``; ``tools/benchmark.py --suite NAME`` runs each case in a fresh
process, so that every case's peak-memory figures are its own.
"""

from __future__ import annotations

import math
import os
import platform
import resource
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

__all__ = ["random_teacher", "random_state", "bench_config", "xla_flops", "xla_memory", "device_memory",
           "max_rss_bytes", "run_benchmark", "format_report", "parse_pair"]

METHODS = ("dfad",)  # the methods the PyTorch reference round implements
DTYPES = ("float32", "bfloat16")
SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}

MEMORY_NOTES = {
    "xla": "XLA buffers of the compiled round (memory_analysis: arguments + outputs + temporaries - donated aliases)",
    "dev": "JAX device allocator's peak_bytes_in_use during the case, less the bytes in use before it",
    "cuda": "torch.cuda.max_memory_allocated() over the timed rounds",
    "rss": "increase of the process's maximum resident set size over the PyTorch phase (resource.getrusage)",
}


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


def random_teacher(arch: str = "lenet5", dataset: str = "fashion_mnist", seed: int = 0,
                   dtype: str = "float32") -> Teacher:
    """A ``Teacher`` (registry model ``arch``) with random weights, for ``dataset``'s input shape and classes.

    The weights are drawn with numpy from the shapes (``jax.eval_shape``), which costs no
    XLA compilation (compiling a jitted ``model.init`` takes seconds on small CPUs).
    ``dtype`` is the teacher's compute dtype (its parameters are float32 either way).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    spec = get_spec(dataset)
    model = build_model(arch, spec.num_classes, dtype=getattr(jnp, dtype))
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
    from dfkd_jax.core import sharding
    from dfkd_jax.core.state import ModelState
    from dfkd_jax.engine.state import DistillState

    shapes = distiller.abstract_state()
    rng = np.random.default_rng(seed)

    def model_state(abstract, tx):
        v = _random_like({"params": abstract.params, "batch_stats": abstract.batch_stats}, rng)
        return ModelState(params=v["params"], batch_stats=v["batch_stats"], opt_state=jax.jit(tx.init)(v["params"]))

    from dfkd_jax.synthesis.online import OnlineState
    state = DistillState(round=np.zeros(shapes.round.shape, shapes.round.dtype),
                         rng=np.asarray(jax.random.PRNGKey(seed), shapes.rng.dtype),
                         synth=OnlineState(generator=model_state(shapes.synth.generator, distiller.tx_g)),
                         student=model_state(shapes.student, distiller.tx_s))
    return sharding.replicate_tree(state, distiller.mesh)


def parse_pair(pair: str) -> tuple[str, str]:
    """``'lenet5:lenet5_half'`` -> ``('lenet5', 'lenet5_half')`` (teacher, student)."""
    parts = pair.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair must be TEACHER:STUDENT (e.g. lenet5:lenet5_half), not {pair!r}.")
    return parts[0], parts[1]


def bench_config(method: str = "dfad", teacher: str = "lenet5", student: str = "lenet5_half",
                 dataset: str = "fashion_mnist", batch: int = 256, ngf: int = 64, nz: int = 100, rounds: int = 100,
                 dtype: str = "float32"):
    """The method's published config with the benchmark's sizes, constant learning rates and ``compute_dtype``."""
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
    c.compute_dtype = str(dtype)
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


def xla_memory(compiled) -> dict[str, int | None]:
    """Buffer sizes of a compiled JAX computation from XLA's ``memory_analysis()`` (bytes).

    ``total_bytes`` is arguments + outputs + temporaries - aliases (outputs written into
    donated arguments); ``reported_peak_bytes`` is the ``peak_memory_in_bytes`` field where
    this jaxlib has it (XLA:CPU's is not a whole-program peak). Every field is ``None`` when
    the backend or version does not say.
    """
    fields = {"argument_bytes": "argument_size_in_bytes", "output_bytes": "output_size_in_bytes",
              "temp_bytes": "temp_size_in_bytes", "alias_bytes": "alias_size_in_bytes",
              "generated_code_bytes": "generated_code_size_in_bytes", "reported_peak_bytes": "peak_memory_in_bytes"}
    out: dict[str, int | None] = dict.fromkeys(fields, None)
    out["total_bytes"] = None
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not implemented on this backend
        stats = None
    if stats is None:
        return out
    for key, attr in fields.items():
        v = stats.get(attr) if isinstance(stats, Mapping) else getattr(stats, attr, None)
        try:
            out[key] = None if v is None else int(v)
        except (TypeError, ValueError):
            pass
    parts = [out["argument_bytes"], out["output_bytes"], out["temp_bytes"]]
    if all(v is not None for v in parts):
        out["total_bytes"] = int(sum(parts) - (out["alias_bytes"] or 0))
    if not out["reported_peak_bytes"]:  # 0 where XLA does not estimate it
        out["reported_peak_bytes"] = None
    return out


def device_memory(device=None) -> dict[str, int] | None:
    """The JAX device allocator's ``bytes_in_use`` and ``peak_bytes_in_use`` (``None`` where not kept, e.g. CPU)."""
    try:
        device = device if device is not None else jax.devices()[0]
        stats = device.memory_stats()
    except Exception:
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


def max_rss_bytes() -> int:
    """This process's maximum resident set size so far, in bytes (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


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
    def __init__(self, cfg, seed: int, log: Callable[[str], None], teacher_dtype: str = "float32"):
        from dfkd_jax.engine.distiller import Distiller

        self.device = jax.devices()[0]
        self.device_memory_before = device_memory(self.device)
        teacher = random_teacher(cfg.teacher.arch, cfg.data.dataset, seed, dtype=teacher_dtype)
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
        self.xla_memory = xla_memory(self.compiled)
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

    def memory(self, rss_increase: int | None) -> dict[str, Any]:
        before, after = self.device_memory_before, device_memory(self.device)
        out: dict[str, Any] = {"xla": self.xla_memory, "device": None, "host_max_rss_increase_bytes": rss_increase}
        if after is not None:
            out["device"] = {"peak_bytes_in_use": after.get("peak_bytes_in_use"),
                             "peak_bytes_in_use_before": (before or {}).get("peak_bytes_in_use"),
                             "bytes_in_use_before": (before or {}).get("bytes_in_use"),
                             "bytes_limit": after.get("bytes_limit")}
        # the headline figure: the allocator's peak if this case set it (less what was live before the
        # case), else XLA's buffer total
        dev = out["device"]
        if dev and dev["peak_bytes_in_use"] and (dev["peak_bytes_in_use"] > (dev["peak_bytes_in_use_before"] or 0)):
            out["peak_bytes"] = dev["peak_bytes_in_use"] - (dev["bytes_in_use_before"] or 0)
            out["peak_source"] = "dev"
        elif self.xla_memory.get("total_bytes") is not None:
            out["peak_bytes"], out["peak_source"] = self.xla_memory["total_bytes"], "xla"
        else:
            out["peak_bytes"], out["peak_source"] = None, None
        return out


class _TorchSide:
    def __init__(self, cfg, device: str, seed: int, threads: int | None, autocast: str | None = None):
        torch = torch_round.setup_torch(device, threads)
        self.torch = torch
        torch.manual_seed(seed)
        spec = get_spec(cfg.data.dataset)
        h, _, c = spec.image_shape
        teacher = torch_round.build_model(cfg.teacher.arch, spec.num_classes, c)
        student = torch_round.build_model(cfg.student.arch, spec.num_classes, c)
        generator = torch_round.build_generator(int(cfg.generator.nz), int(cfg.generator.ngf), c, h)
        self.r = torch_round.DFADRound.from_config(cfg, teacher, student, generator, device=device, autocast=autocast)
        self.out = None
        self.flops = None

    @property
    def cuda(self) -> bool:
        return self.r.device.type == "cuda"

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

    def reset_peak_memory(self) -> None:
        if self.cuda:
            self.r.synchronize()
            self.torch.cuda.reset_peak_memory_stats(self.r.device)

    def memory(self, rss_increase: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"cuda_max_allocated_bytes": None, "cuda_max_reserved_bytes": None,
                               "host_max_rss_increase_bytes": rss_increase}
        if self.cuda:
            out["cuda_max_allocated_bytes"] = int(self.torch.cuda.max_memory_allocated(self.r.device))
            out["cuda_max_reserved_bytes"] = int(self.torch.cuda.max_memory_reserved(self.r.device))
            out["peak_bytes"], out["peak_source"] = out["cuda_max_allocated_bytes"], "cuda"
        else:
            out["peak_bytes"], out["peak_source"] = rss_increase, "rss"
        return out

    def losses(self) -> dict[str, float]:
        if self.out is None:
            return {}
        return {"generator/loss": float(self.out["generator/loss"]),
                "student/loss": float(self.out["student/loss"].float().mean())}


def run_benchmark(method: str = "dfad", pair: str = "lenet5:lenet5_half", dataset: str = "fashion_mnist",
                  batch: int = 256, ngf: int = 64, nz: int = 100, rounds: int = 5, warmup: int = 1,
                  blocks: int = 2, device: str = "cpu", seed: int = 0, threads: int | None = None,
                  log: Callable[[str], None] | None = None, dtype: str = "float32",
                  teacher_dtype: str = "float32", torch_autocast: str | None = None) -> dict[str, Any]:
    """Time ``rounds`` JAX rounds and ``rounds`` PyTorch rounds in alternating blocks; a report dict.

    The warmup rounds come first, PyTorch's then JAX's (``warmup`` untimed rounds each;
    the JAX round is compiled before its warmup), then the timed rounds, split into
    ``blocks`` blocks per framework run in the order JAX, PyTorch, PyTorch, JAX, JAX, ...
    ``device`` is the PyTorch device (``cpu`` or ``cuda``); JAX uses its default backend.
    ``dtype`` is the JAX round's ``compute_dtype``, ``teacher_dtype`` the JAX teacher's and
    ``torch_autocast`` (``None`` or ``'bfloat16'``) the PyTorch round's autocast dtype.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if int(rounds) < 1:
        raise ValueError("rounds must be at least 1.")
    for name, value in (("dtype", dtype), ("teacher_dtype", teacher_dtype)):
        if value not in DTYPES:
            raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, not {value!r}.")
    teacher_arch, student_arch = parse_pair(pair)
    load_start = _loadavg()
    cfg = bench_config(method, teacher_arch, student_arch, dataset, batch, ngf, nz,
                       rounds=int(warmup) + int(rounds), dtype=dtype)
    images_per_round = int(batch) * (int(cfg.generator.steps) + int(cfg.student.steps))

    torch_round.require_torch()  # fail fast without torch, and count its import in neither phase
    rss_start = max_rss_bytes()
    torch_side = _TorchSide(cfg, device, seed, threads, torch_autocast)
    for i in range(int(warmup)):
        log(f"torch warmup {i + 1}/{warmup}: {torch_side.round(count_flops=i == 0):.3f} s")
    rss_torch = max_rss_bytes()
    jax_side = _JaxSide(cfg, seed, log, teacher_dtype)
    for i in range(int(warmup)):
        log(f"jax warmup {i + 1}/{warmup}: {jax_side.round():.3f} s")
    rss_jax = max_rss_bytes()
    torch_side.reset_peak_memory()

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
                   memory=jax_side.memory(max(rss_jax - rss_torch, 0)),
                   last_losses=jax_side.losses())
    torch_sum.update(flops_per_round=torch_side.flops,
                     flops_per_s=(torch_side.flops / torch_sum["median_s"]) if torch_side.flops else None,
                     memory=torch_side.memory(max(rss_torch - rss_start, 0)),
                     last_losses=torch_side.losses())
    torch = torch_side.torch
    jdev = jax.devices()[0]
    torch_settings = {}
    if torch_side.cuda:
        torch_settings = {"float32_matmul_precision": torch.get_float32_matmul_precision(),
                          "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                          "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    precision = getattr(jax.config, "jax_default_matmul_precision", None)
    return {
        "config": {"method": method, "teacher": teacher_arch, "student": student_arch, "dataset": dataset,
                   "input_shape": list(get_spec(dataset).image_shape), "generator": "dafl (GeneratorA)",
                   "batch": int(batch), "ngf": int(ngf), "nz": int(nz), "generator_steps": int(cfg.generator.steps),
                   "student_steps": int(cfg.student.steps), "rounds": int(rounds), "warmup": int(warmup),
                   "blocks": len(_blocks(rounds, blocks)), "seed": int(seed), "order": order,
                   "dtype": dtype, "teacher_dtype": teacher_dtype, "torch_autocast": torch_autocast},
        "device": {"jax_backend": jax.default_backend(), "jax_device_kind": jdev.device_kind,
                   "jax_device_count": jax.device_count(), "torch_device": str(torch_side.r.device),
                   "torch_device_name": (torch.cuda.get_device_name(torch_side.r.device)
                                         if torch_side.cuda else _cpu_name()),
                   "torch_threads": torch.get_num_threads(), "cpu": _cpu_name(),
                   "cpu_cores": torch_round.cpu_cores(),
                   "platform": platform.platform(), "loadavg_1min_start": load_start,
                   "loadavg_1min_end": _loadavg(),
                   "jax_matmul_precision": None if precision is None else str(precision),
                   "torch_settings": torch_settings,
                   "env": {k: os.environ[k] for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                      "XLA_PYTHON_CLIENT_ALLOCATOR", "XLA_FLAGS", "OMP_NUM_THREADS",
                                                      "OMP_WAIT_POLICY") if k in os.environ}},
        "versions": _versions(torch.__version__),
        "images_per_round": images_per_round,
        "jax": jax_sum,
        "torch": torch_sum,
        "ratio_torch_over_jax": torch_sum["median_s"] / jax_sum["median_s"],
    }


def _versions(torch_version: str | None = None) -> dict[str, str | None]:
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": _version("jaxlib"),
            "flax": _version("flax"), "optax": _version("optax"),
            "torch": torch_version if torch_version is not None else _version("torch"), "numpy": np.__version__}


def _fmt(v, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    return "-" if v is None else f"{v / scale:{spec}}{unit}"


def _si(v: float | None, unit: str = "") -> str:
    """``1.23e12`` -> ``'1.23 T'`` (three significant digits)."""
    if v is None or not math.isfinite(v):
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def _bytes(v: int | None, tag: str | None = None) -> str:
    if v is None:
        return "-"
    text = f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB"
    return f"{text} {tag}" if tag else text


def _memory_cell(side: Mapping[str, Any]) -> str:
    mem = side.get("memory") or {}
    return _bytes(mem.get("peak_bytes"), mem.get("peak_source"))


def _peak_flops(peaks: Mapping[str, Any] | None, framework: str, dtype: str) -> float | None:
    entry = ((peaks or {}).get(framework) or {}).get(dtype) or {}
    v = entry.get("flops_per_s")
    return float(v) if v else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_report(r: dict[str, Any]) -> str:
    """A small text table of a ``run_benchmark`` report (with fractions of peak where it holds ``'peaks'``)."""
    c, dv, j, t = r["config"], r["device"], r["jax"], r["torch"]
    h, w, ch = c["input_shape"]
    jm, tm = j.get("memory") or {}, t.get("memory") or {}
    xla = jm.get("xla") or {}
    dtype, autocast = c.get("dtype", "float32"), c.get("torch_autocast")
    lines = [
        f"{c['method']}: {c['teacher']} -> {c['student']}, GeneratorA ngf {c['ngf']} nz {c['nz']}, "
        f"{h}x{w}x{ch}, batch {c['batch']}, {c['generator_steps']} + {c['student_steps']} steps/round, "
        f"{c['rounds']} timed rounds in {c['blocks']} alternating blocks (warmup {c['warmup']})",
        f"compute dtype: JAX {dtype} (teacher {c.get('teacher_dtype', 'float32')}), "
        f"PyTorch {'float32 with ' + autocast + ' autocast' if autocast else 'float32'}",
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
    ]
    peaks = r.get("peaks")
    if peaks:
        devices = j.get("mesh_devices") or 1
        jax_peak = _peak_flops(peaks, "jax", dtype)
        torch_peak = _peak_flops(peaks, "torch", autocast or "float32")
        # both fractions use XLA's FLOP count of the round (the same work), over each framework's time
        torch_fps = _ratio(j.get("flops_per_round"), t.get("median_s"))
        frac_j = _ratio(j.get("flops_per_s"), jax_peak * devices if jax_peak else None)
        frac_t = _ratio(torch_fps, torch_peak)
        lines.append(f"{'% of matmul peak':<22}{_fmt(frac_j, '.1%'):>16}{_fmt(frac_t, '.1%'):>16}")
    if jm or tm:
        lines += [
            f"{'peak memory':<22}{_memory_cell(j):>16}{_memory_cell(t):>16}",
            f"{'  XLA buffers':<22}{_bytes(xla.get('total_bytes')):>16}{'-':>16}",
            f"{'  host max-RSS incr.':<22}{_bytes(jm.get('host_max_rss_increase_bytes')):>16}"
            f"{_bytes(tm.get('host_max_rss_increase_bytes')):>16}",
        ]
    lines += [
        "",
        f"ratio torch/jax (median): {r['ratio_torch_over_jax']:.3f}  (> 1: dfkd_jax is faster); "
        f"{r['images_per_round']} synthetic images per round",
        "FLOPs: JAX from XLA's cost analysis of the compiled round; PyTorch from torch.utils.flop_counter "
        "(convolutions and matmuls only).",
    ]
    if peaks:
        lines.append("% of matmul peak: XLA's FLOPs of the round over each framework's median time, over its "
                     "measured matmul peak in the round's dtype.")
    if jm or tm:
        lines.append("memory: " + "; ".join(f"{k} = {v}" for k, v in MEMORY_NOTES.items()) + ".")
    return "\n".join(lines)

