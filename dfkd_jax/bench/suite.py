"""Benchmark suites: lists of cases run one after another, one table, and the Markdown
section ``tools/benchmark.py --suite NAME --markdown PATH`` writes (see ``dfkd_jax.bench``)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from dfkd_jax.bench.harness import DTYPES, MEMORY_NOTES, SHORT_DTYPES, _fmt, _memory_cell, _peak_flops, _ratio, _si, _versions

# -- the suite --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SuiteCase:
    """One benchmark of a suite: ``run_benchmark``'s arguments that differ between cases."""

    method: str = "dfad"
    pair: str = "lenet5:lenet5_half"
    dataset: str = "fashion_mnist"
    batch: int = 256
    ngf: int = 64
    nz: int = 100
    dtype: str = "float32"  # the JAX round's compute_dtype

    @property
    def label(self) -> str:
        return f"{self.method} {self.pair} {self.dataset} b{self.batch} ngf{self.ngf} nz{self.nz}"


# name -> PyTorch device, the JAX dtypes each case runs in by default, the cases (float32 entries)
SUITES: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda",
        "dtypes": ("float32", "bfloat16"),
        "cases": (SuiteCase("dfad", "resnet34:resnet18", "cifar10", 256, 64, 256),  # the acceptance case
                  SuiteCase("dfad", "wrn40_2:wrn16_1", "cifar10", 256, 64, 256),
                  SuiteCase("dfad", "lenet5:lenet5_half", "fashion_mnist", 256, 64, 100)),
    },
    "cpu-small": {
        "device": "cpu",
        "dtypes": ("float32",),
        "cases": (SuiteCase("dfad", "lenet5:lenet5_half", "fashion_mnist", 64, 16, 100),
                  SuiteCase("dfad", "wrn16_2:wrn16_1", "fashion_mnist32x3", 32, 16, 100)),
    },
}


def suite_cases(name: str, dtypes: Sequence[str] | None = None) -> list[SuiteCase]:
    """The cases of suite ``name``, each in every dtype of ``dtypes`` (default: the suite's)."""
    if name not in SUITES:
        raise ValueError(f"Unknown suite {name!r}. Valid names: {', '.join(SUITES)}.")
    dtypes = tuple(dtypes or SUITES[name]["dtypes"])
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {d!r}.")
    return [dataclasses.replace(case, dtype=d) for case in SUITES[name]["cases"] for d in dtypes]


def run_suite(cases: Sequence[SuiteCase], run_case: Callable[[SuiteCase], dict[str, Any]], *, name: str = "",
              peaks: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``run_case(case)`` (a ``run_benchmark`` report) for every case; a suite report.

    A case that raises is recorded with its error and the suite goes on.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = []
    for i, case in enumerate(cases, 1):
        log(f"[{i}/{len(cases)}] {case.label} {case.dtype}")
        try:
            report, error = run_case(case), None
        except Exception as e:  # noqa: BLE001 - one case running out of memory must not lose the others
            report, error = None, f"{type(e).__name__}: {e}"
            log(f"[{i}/{len(cases)}] failed: {error}")
        results.append({"case": dataclasses.asdict(case), "report": report, "error": error})
    return {"suite": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": dict(settings or {}), "peaks": dict(peaks) if peaks else None, "results": results}


def suite_rows(suite: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict of numbers per case of a suite report (``None`` where a figure is missing)."""
    peaks = suite.get("peaks")
    rows = []
    for res in suite["results"]:
        case, r = SuiteCase(**res["case"]), res.get("report")
        row: dict[str, Any] = {"case": case.label, "dtype": case.dtype, "error": res.get("error")}
        if r is None:
            rows.append(row)
            continue
        j, t, cfg = r["jax"], r["torch"], r.get("config", {})
        autocast = cfg.get("torch_autocast")
        flops = j.get("flops_per_round")
        devices = j.get("mesh_devices") or 1
        jax_fps = _ratio(flops, j.get("median_s"))
        torch_fps = _ratio(flops, t.get("median_s"))  # XLA's count of the same round, over PyTorch's time
        fp32, bf16 = _peak_flops(peaks, "jax", "float32"), _peak_flops(peaks, "jax", "bfloat16")
        torch_peak = _peak_flops(peaks, "torch", autocast or "float32")
        row.update(
            dtype=f"{SHORT_DTYPES.get(cfg.get('dtype', case.dtype), case.dtype)}/"
                  f"{SHORT_DTYPES[autocast] + '-ac' if autocast else 'fp32'}",
            jax_s=j.get("median_s"), torch_s=t.get("median_s"), ratio=r.get("ratio_torch_over_jax"),
            jax_ips=j.get("images_per_s"), torch_ips=t.get("images_per_s"), compile_s=j.get("compile_s"),
            flops=flops, jax_fps=jax_fps, jax_frac_fp32=_ratio(jax_fps, fp32 * devices if fp32 else None),
            jax_frac_bf16=_ratio(jax_fps, bf16 * devices if bf16 else None), torch_fps=torch_fps,
            torch_frac=_ratio(torch_fps, torch_peak), jax_mem=_memory_cell(j), torch_mem=_memory_cell(t))
        rows.append(row)
    return rows


_COLUMNS = (  # header, row key, formatter
    ("case", "case", str),
    ("dtype jax/torch", "dtype", str),
    ("s/round jax", "jax_s", lambda v: _fmt(v, ".4f")),
    ("s/round torch", "torch_s", lambda v: _fmt(v, ".4f")),
    ("torch/jax", "ratio", lambda v: _fmt(v, ".2f")),
    ("img/s jax", "jax_ips", lambda v: _fmt(v, ".0f")),
    ("img/s torch", "torch_ips", lambda v: _fmt(v, ".0f")),
    ("compile s", "compile_s", lambda v: _fmt(v, ".1f")),
    ("FLOP/round", "flops", _si),
    ("FLOP/s jax", "jax_fps", _si),
    ("jax % fp32 peak", "jax_frac_fp32", lambda v: _fmt(v, ".1%")),
    ("jax % bf16 peak", "jax_frac_bf16", lambda v: _fmt(v, ".1%")),
    ("FLOP/s torch", "torch_fps", _si),
    ("torch % peak", "torch_frac", lambda v: _fmt(v, ".1%")),
    ("mem jax", "jax_mem", str),
    ("mem torch", "torch_mem", str),
)

SUITE_LEGEND = (
    "s/round: median seconds per round (1 generator + 5 student updates); torch/jax > 1: dfkd_jax is faster.",
    "img/s: synthetic images per second. compile s: lowering + XLA compilation of the JAX round.",
    "FLOP/round: XLA's cost analysis of the compiled JAX round (all devices of the mesh).",
    "FLOP/s: that count over each framework's median round time (for PyTorch the same count, so the two compare).",
    "% peak: FLOP/s over the framework's measured matmul peak on its device (jax: its float32 and bfloat16 "
    "peaks; torch: the peak in its own dtype).",
    "dtype: JAX compute dtype / PyTorch (fp32, or bf16-ac for bfloat16 autocast).",
    "mem: " + "; ".join(f"{k} = {v}" for k, v in MEMORY_NOTES.items()) + ".",
)


def format_suite_table(suite: Mapping[str, Any], markdown: bool = False) -> str:
    """The suite report as one table (plain text, or a Markdown table with ``markdown=True``)."""
    rows = suite_rows(suite)
    cells = []
    for row in rows:
        if row.get("error") and "jax_s" not in row:
            cells.append([row["case"], SHORT_DTYPES.get(row["dtype"], row["dtype"]), f"error: {row['error']}"]
                         + [""] * (len(_COLUMNS) - 3))
            continue
        cells.append([fmt(row.get(key)) for _, key, fmt in _COLUMNS])
    headers = [h for h, _, _ in _COLUMNS]
    if markdown:
        def line(values):
            return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

        align = ["---", "---"] + ["---:"] * (len(_COLUMNS) - 2)
        return "\n".join([line(headers), "| " + " | ".join(align) + " |"] + [line(c) for c in cells])
    widths = [max([len(h)] + [len(c[i]) for c in cells if not (i == 2 and c[2].startswith("error"))])
              for i, h in enumerate(headers)]

    def text_line(values):
        if len(values) > 2 and str(values[2]).startswith("error"):
            return "  ".join([values[0].ljust(widths[0]), values[1].ljust(widths[1]), values[2]])
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([text_line(headers), "  ".join("-" * w for w in widths)] + [text_line(c) for c in cells])


def _first_report(suite: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((res["report"] for res in suite["results"] if res.get("report")), None)


def format_peaks(peaks: Mapping[str, Any] | None, markdown: bool = False) -> str:
    """The measured matmul peaks as a small table."""
    if not peaks:
        return "(peaks not measured)"
    rows = []
    for framework, entries in peaks.items():
        for dtype, e in (entries or {}).items():
            if "error" in e:
                rows.append([framework, dtype, "-", "-", "-", f"error: {e['error']}"])
                continue
            rows.append([framework, dtype, str(e.get("n")), _si(e.get("flops_per_s"), "FLOP/s"),
                         _si(e.get("median_flops_per_s"), "FLOP/s"), str(e.get("device", ""))])
    headers = ["framework", "dtype", "n", "best", "median", "device"]
    if markdown:
        return "\n".join(["| " + " | ".join(headers) + " |", "| --- | --- | ---: | ---: | ---: | --- |"]
                         + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in [headers] + rows)


def suite_markdown(suite: Mapping[str, Any]) -> str:
    """A Markdown section for ``docs/performance.md``: command, date, devices, versions, peaks and the table."""
    first = _first_report(suite) or {}
    dv, versions = first.get("device", {}), first.get("versions") or _versions()
    cfg, settings = first.get("config", {}), suite.get("settings", {})
    lines = [f"## Benchmark suite `{suite.get('suite', '')}`", ""]
    if suite.get("command"):
        lines += ["Command:", "", "```", suite["command"], "```", ""]
    lines.append(f"- Date: {suite.get('date', '')}")
    if dv:
        precision = dv.get("jax_matmul_precision") or "unset"
        lines.append(f"- JAX device: {dv.get('jax_device_count')} x {dv.get('jax_device_kind')} "
                     f"({dv.get('jax_backend')}; jax_default_matmul_precision {precision})")
        torch_extra = ", ".join(f"{k} {v}" for k, v in (dv.get("torch_settings") or {}).items())
        lines.append(f"- PyTorch device: {dv.get('torch_device')} ({dv.get('torch_device_name')}, "
                     f"{dv.get('torch_threads')} CPU threads{', ' + torch_extra if torch_extra else ''})")
        lines.append(f"- Host: {dv.get('cpu')}, {dv.get('cpu_cores')} cores; {dv.get('platform')}")
        if dv.get("env"):
            lines.append("- Environment: " + ", ".join(f"`{k}={v}`" for k, v in dv["env"].items()))
    lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    if cfg:
        lines.append(f"- Rounds: {cfg.get('rounds')} timed per framework in {cfg.get('blocks')} alternating blocks, "
                     f"after {cfg.get('warmup')} warmup rounds; random weights; DFAD round = "
                     f"{cfg.get('generator_steps')} generator + {cfg.get('student_steps')} student updates")
    if settings:
        lines.append("- Settings: " + ", ".join(f"{k}: {v}" for k, v in settings.items()))
    lines += ["", "Measured matmul peaks (n x n by n x n, FLOP/s of the best and the median repeat):", "",
              format_peaks(suite.get("peaks"), markdown=True), "", format_suite_table(suite, markdown=True), ""]
    lines += [f"- {line}" for line in SUITE_LEGEND]
    return "\n".join(lines)


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- benchmark-suite:{key}:begin -->", f"<!-- benchmark-suite:{key}:end -->"


def write_markdown_section(path: str, key: str, body: str, title: str = "# Performance") -> str:
    """Put ``body`` between this ``key``'s markers in the Markdown file ``path``; the text of the new file.

    An existing section (the text between the markers) is replaced; otherwise the section
    is appended. Everything outside the markers is kept as it was. A new file starts with
    ``title``.
    """
    begin, end = _markers(key)
    section = f"{begin}\n{body.strip()}\n{end}"
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    i = text.find(begin)
    k = text.find(end, i + len(begin)) if i >= 0 else -1
    if i >= 0 and k >= 0:
        new = text[:i] + section + text[k + len(end):]
    elif text.strip():
        new = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        new = f"{title}\n\n{section}\n"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return new
