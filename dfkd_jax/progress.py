"""Progress bars: tqdm, redrawn rarely when the output is not a terminal (logs, CI)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, *, enabled: bool = True, **kwargs):
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)
