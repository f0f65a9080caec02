"""Command line: ``python -m dfkd_jax.main --config configs/fashion_mnist/dafl.py --workdir runs/x``.

Overrides: ``--config.<key>=<value>`` (e.g. ``--config.train.rounds=500``). All logic
lives in ``dfkd_jax.engine.loop`` so it can be imported and tested.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/<dataset>/<method>.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, samples and results; "
                               "rerunning with the same folder resumes.")


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from dfkd_jax.engine.loop import NonFiniteLossError, train_and_evaluate
    from dfkd_jax.data import DatasetNotFoundError
    from dfkd_jax.teacher import CheckpointMismatchError
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (NonFiniteLossError, DatasetNotFoundError, CheckpointMismatchError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def _parse_flags(argv):
    """Parse flags; a bad ``--config.<key>`` override exits with the valid keys instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        msg = str(e).strip("'\"")
        if isinstance(e, (AttributeError, KeyError)):
            from dfkd_jax.config import all_keys, base_config, unknown_key_message
            valid = set(all_keys(base_config()))
            overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
            bad = [k for k in overrides if k not in valid and ".terms." not in k]
            if bad:
                msg = unknown_key_message(bad[0], base_config())
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def run():
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
