"""Methods: each module sets a method's terms, step counts and published defaults on a config.

A method is configuration, not code: ``configure(config)`` chooses the generator and
student terms (``dfkd_jax.objectives``), the number of generator and student updates
per round, which batch the student learns from, and the optimisers of the paper.
The engine's round is the same for all of them.
"""

from __future__ import annotations

from dfkd_jax.errors import ConfigError
from dfkd_jax.methods import (adadfkd, adi, cmi, cudfkd, dafl, dfad, dfq, fast, mtcki, predfkd, soft_targeted, zskd,
                              zskt)

METHODS = {
    "dfad": dfad,
    "dafl": dafl,
    "zskt": zskt,
    "dfq": dfq,
    "cudfkd": cudfkd,
    "adadfkd": adadfkd,
    "predfkd": predfkd,
    "adi": adi,
    "cmi": cmi,
    "mtcki": mtcki,
    "fast": fast,
    "zskd": zskd,
    "soft_targeted": soft_targeted,
}


def configure(config, method: str):
    if method not in METHODS:
        raise ConfigError(f"Unknown method {method!r}. Valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[method].configure(config)
