"""The achieved peak FLOP/s of a device: a large square matrix product, timed.

    from dfkd_jax.bench.peak import jax_matmul_peak, torch_matmul_peak, measure_peaks
    jax_matmul_peak("bfloat16")["flops_per_s"]       # JAX's default device
    torch_matmul_peak("float32", device="cuda")
    measure_peaks(torch_device="cuda")              # both frameworks, float32 and bfloat16

An ``n x n`` by ``n x n`` product is ``2 n^3`` FLOPs. The product is compiled (JAX: jit;
PyTorch: eager ``torch.mm``), run ``warmup`` times, then timed ``repeats`` times; each
timed repeat queues ``iters`` products back to back and waits for the last one, so the
dispatch cost of one call is spread over many (``iters`` is chosen from a first timing to
make a repeat last about ``target_s``). The figure reported is the best repeat, i.e. what
this device demonstrably reaches on a dense product, the denominator for a round's
"fraction of peak"; the median is reported too. Nothing is cached (on disk or here): each
call measures again.

The size defaults by backend: 8192 on GPUs and TPUs, 2048 for float32 and 1024 for
bfloat16 on CPUs (XLA:CPU and PyTorch's CPU kernels are much slower in bfloat16).

Precision settings matter and are reported with the figures: on NVIDIA GPUs JAX's default
float32 matrix products and convolutions may use TF32 tensor cores
(``jax_default_matmul_precision`` unset), and its peak is measured with the setting as it
is, the one its round runs under. PyTorch's float32 ``torch.mm`` uses TF32 only when
``torch.get_float32_matmul_precision()`` is not ``'highest'`` (it is by default), while its
convolutions, most of a round's FLOPs, follow ``torch.backends.cudnn.allow_tf32`` (on by
default); so PyTorch's float32 peak on CUDA is measured with the matmul precision set, for
the measurement only, to match the convolutions' setting (``tf32=None``; pass
``tf32=True/False`` to choose), and the value used is recorded.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

__all__ = ["default_size", "jax_matmul_peak", "torch_matmul_peak", "measure_peaks"]

DTYPES = ("float32", "bfloat16")


def default_size(backend: str, dtype: str = "float32") -> int:
    """Matrix size for a backend (``'cpu'``, ``'gpu'``, ``'cuda'``, ``'tpu'``, ...)."""
    if backend == "cpu":
        return 2048 if dtype == "float32" else 1024
    return 8192


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")


def _time_products(run: Callable[[int], None], n: int, warmup: int, repeats: int,
                   target_s: float, max_iters: int) -> dict[str, Any]:
    """Time ``run(iters)`` (queue ``iters`` products, wait for the last) and turn it into FLOP/s."""
    for _ in range(max(int(warmup), 1)):
        run(1)
    t0 = time.perf_counter()
    run(1)
    first = max(time.perf_counter() - t0, 1e-9)
    iters = int(max(1, min(int(max_iters), math.ceil(float(target_s) / first))))
    per_product = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        run(iters)
        per_product.append((time.perf_counter() - t0) / iters)
    flops = 2.0 * float(n) ** 3
    best = min(per_product)
    return {"n": int(n), "flops_per_product": flops, "iters": iters, "repeats": len(per_product),
            "best_s": best, "median_s": statistics.median(per_product),
            "flops_per_s": flops / best, "median_flops_per_s": flops / statistics.median(per_product)}


def jax_matmul_peak(dtype: str = "float32", n: int | None = None, *, device=None, warmup: int = 2,
                    repeats: int = 5, target_s: float = 0.2, max_iters: int = 64) -> dict[str, Any]:
    """Achieved FLOP/s of a jitted ``n x n`` product in ``dtype`` on a JAX device (default: the first).

    Returns a dict with ``flops_per_s`` (best repeat), ``median_flops_per_s``, ``n``,
    ``dtype``, ``device`` (its kind), ``backend`` and the matmul precision setting.
    """
    import jax
    import jax.numpy as jnp

    _check_dtype(dtype)
    device = device if device is not None else jax.devices()[0]
    backend = getattr(device, "platform", jax.default_backend())
    n = int(n or default_size(backend, dtype))
    jdtype = jnp.dtype(dtype)

    def operands():
        ka, kb = jax.random.split(jax.random.PRNGKey(0))
        return (jax.random.normal(ka, (n, n), jnp.float32).astype(jdtype),
                jax.random.normal(kb, (n, n), jnp.float32).astype(jdtype))

    a, b = jax.jit(operands)()
    a, b = jax.device_put(a, device), jax.device_put(b, device)
    product = jax.jit(jnp.matmul)

    def run(iters: int) -> None:
        out = None
        for _ in range(iters):
            out = product(a, b)
        jax.block_until_ready(out)

    result = _time_products(run, n, warmup, repeats, target_s, max_iters)
    precision = getattr(jax.config, "jax_default_matmul_precision", None)
    result.update(framework="jax", dtype=dtype, backend=backend, device=getattr(device, "device_kind", str(device)),
                  matmul_precision=None if precision is None else str(precision))
    return result


def torch_matmul_peak(dtype: str = "float32", n: int | None = None, *, device: str = "cpu", warmup: int = 2,
                      repeats: int = 5, target_s: float = 0.2, max_iters: int = 64,
                      tf32: bool | None = None) -> dict[str, Any]:
    """Achieved FLOP/s of ``torch.mm`` of two ``n x n`` matrices in ``dtype`` on ``device``.

    On CUDA, ``tf32`` says whether float32 products may use TF32 during the measurement
    (``torch.set_float32_matmul_precision('high')`` or ``'highest'``; ``None``: as
    ``torch.backends.cudnn.allow_tf32``); the precision setting is restored after.
    """
    from dfkd_jax.bench.torch_round import require_torch

    torch = require_torch()
    _check_dtype(dtype)
    dev = torch.device(device)
    n = int(n or default_size("cpu" if dev.type == "cpu" else "gpu", dtype))
    tdtype = getattr(torch, dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, generator=gen).to(tdtype)
    b = torch.randn(n, n, device=dev, generator=gen).to(tdtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def run(iters: int) -> None:
        with torch.no_grad():
            for _ in range(iters):
                torch.mm(a, b)
        sync()

    settings: dict[str, Any] = {"threads": torch.get_num_threads()}
    if dev.type == "cuda":
        # torch.set_float32_matmul_precision: 'highest' = IEEE float32, 'high' = TF32 allowed
        saved = torch.get_float32_matmul_precision()
        use = bool(torch.backends.cudnn.allow_tf32) if tf32 is None else bool(tf32)
        settings.update(float32_matmul_precision=saved, cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                        tf32_during_peak=use)
        torch.set_float32_matmul_precision("high" if use else "highest")
        try:
            result = _time_products(run, n, warmup, repeats, target_s, max_iters)
        finally:
            torch.set_float32_matmul_precision(saved)
    else:
        result = _time_products(run, n, warmup, repeats, target_s, max_iters)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    result.update(framework="torch", dtype=dtype, backend=dev.type, device=name, settings=settings)
    return result


def measure_peaks(torch_device: str | None = "cpu", n: int | None = None, dtypes=DTYPES, *,
                  log: Callable[[str], None] | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """``{'jax': {dtype: result}, 'torch': {dtype: result}}``; no ``'torch'`` when ``torch_device`` is None.

    A dtype a framework cannot run on this device gets ``{'error': message}`` instead.
    """
    log = log or (lambda msg: None)
    out: dict[str, dict[str, Any]] = {"jax": {}}
    for dtype in dtypes:
        try:
            out["jax"][dtype] = jax_matmul_peak(dtype, n, **kwargs)
            log(f"peak jax {dtype}: {out['jax'][dtype]['flops_per_s'] / 1e12:.3f} TFLOP/s "
                f"(n {out['jax'][dtype]['n']})")
        except Exception as e:  # noqa: BLE001 - a missing kernel must not lose the other figures
            out["jax"][dtype] = {"error": f"{type(e).__name__}: {e}"}
    if torch_device is not None:
        out["torch"] = {}
        for dtype in dtypes:
            try:
                out["torch"][dtype] = torch_matmul_peak(dtype, n, device=torch_device, **kwargs)
                log(f"peak torch {dtype}: {out['torch'][dtype]['flops_per_s'] / 1e12:.3f} TFLOP/s "
                    f"(n {out['torch'][dtype]['n']})")
            except Exception as e:  # noqa: BLE001
                if isinstance(e, ImportError):
                    raise
                out["torch"][dtype] = {"error": f"{type(e).__name__}: {e}"}
    return out
