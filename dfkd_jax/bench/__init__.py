"""Benchmarks: a dfkd_jax round against the same round in PyTorch eager, in one process.

- ``harness``: one case (``run_benchmark``, ``format_report``), random teachers and states,
  XLA's FLOP and memory analyses;
- ``suite``: lists of cases and their tables (``tools/benchmark.py --suite gpu|cpu-small``);
- ``cpu_speed``: the CPU before/after suite of ``dfkd_jax.models.fast_conv``
  (``tools/benchmark.py --suite cpu-speed``);
- ``peak``: matmul peak FLOP/s of each framework; ``torch_round``: the PyTorch round.
"""

from dfkd_jax.bench.harness import (DTYPES, METHODS, MEMORY_NOTES, bench_config, device_memory,  # noqa: F401
                                    format_report, max_rss_bytes, parse_pair, random_state, random_teacher,
                                    run_benchmark, xla_flops, xla_memory)
from dfkd_jax.bench.suite import (SUITE_LEGEND, SUITES, SuiteCase, format_peaks, format_suite_table,  # noqa: F401
                                  run_suite, suite_cases, suite_markdown, suite_rows, write_markdown_section)
