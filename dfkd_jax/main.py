"""Command line: ``python -m dfkd_jax.main --config configs/fashion_mnist/dafl.py --workdir runs/x``.

Overrides: ``--config.<key>=<value>`` (e.g. ``--config.train.rounds=500``). The method is the
config file's (``config.method`` is written by ``dfkd_jax.methods.<name>.configure`` and cannot
be overridden). All logic lives in ``dfkd_jax.obtain`` (the teacher) and
``dfkd_jax.engine.loop`` (the run) so it can be imported and tested. The project's own errors
(``dfkd_jax.errors.UserError``) print their message and exit with status 1; anything else is
a bug and keeps its traceback. Ctrl-C prints the round it stopped at and exits with status 130.

Compiled programs are kept in JAX's persistent compilation cache, under the project's cache folder
(``$DFKD_JAX_CACHE/xla``, default ``~/.cache/dfkd_jax/xla``), so a rerun or a resume does not compile the
round again. An explicit ``JAX_COMPILATION_CACHE_DIR`` is used as it is; ``DFKD_JAX_NO_COMPILATION_CACHE=1``
turns the cache off.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/<dataset>/<method>.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, samples and results; "
                               "rerunning with the same folder resumes.")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False, "Continue a workdir's run with a config that "
                                  "differs from the one it was started with (refused otherwise).")


NO_CACHE_ENV = "DFKD_JAX_NO_COMPILATION_CACHE"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (see the module docstring); returns its folder or None."""
    import os

    import jax
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # JAX reads it itself
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    from dfkd_jax.config import default_cache_dir
    path = os.path.join(default_cache_dir(), "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from dfkd_jax.errors import UserError
    try:
        _distil()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:  # Ctrl-C: the loop names the round (engine.loop.RunInterrupted)
        print(f"\n{e or 'interrupted; rerun the same command to resume.'}", file=sys.stderr)
        sys.exit(130)


def _distil():
    from dfkd_jax.config import validate
    from dfkd_jax.core import sharding
    from dfkd_jax.engine.loop import train_and_evaluate
    from dfkd_jax.obtain import obtain_teachers, teacher_paths
    from dfkd_jax.engine.workdir import check_is_run_folder
    config = _CONFIG.value
    validate(config)
    check_is_run_folder(os.path.abspath(_WORKDIR.value))  # before a teacher is trained, not after
    enable_compilation_cache()
    if config.distributed:
        sharding.initialize_distributed()
    teachers = obtain_teachers(config)
    train_and_evaluate(config, _WORKDIR.value, teachers, allow_config_change=_ALLOW_CHANGE.value,
                       teacher_dir=",".join(teacher_paths(config)))


def _usage_error(msg: str):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """Parse flags; a bad ``--config.<key>`` override exits with the valid keys instead of a traceback."""
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    if "method" in overrides:
        from dfkd_jax.methods import METHODS
        _usage_error("config.method is set by the config file (its methods.<name>.configure) and cannot be "
                     "overridden: choose the method by its config file, --config configs/<dataset>/<method>.py "
                     f"(methods: {', '.join(sorted(METHODS))}).")
    path = _config_path(argv)
    if path is None and not any(a in ("-h", "-?", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        _usage_error("--config is required: a config file such as configs/fashion_mnist/default.py "
                     "(--help lists them).")
    if path is not None and not os.path.isfile(path.partition(":")[0]):
        _usage_error(f"--config {path}: no such file. Config files are configs/<dataset>/<method>.py "
                     "(--help lists them).")
    try:
        parsed = flags.FLAGS(argv)
    except flags.Error as e:
        text = str(e).strip()
        if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # absl quotes some messages whole
            text = text[1:-1]
        _usage_error(text)
    except (AttributeError, KeyError) as e:  # config_flags on a key the config does not have
        from dfkd_jax.config import all_keys, base_config, unknown_key_message
        valid = set(all_keys(base_config()))
        bad = [k for k in overrides if k not in valid and ".terms." not in k and ".ramps." not in k]
        if bad:
            _usage_error(unknown_key_message(bad[0], base_config()))
        cfg = _load_config_file(argv)
        for key in (k for k in overrides if ".terms." in k or ".ramps." in k):
            role, group, name = key.split(".", 2)  # ".terms." / ".ramps." inside: three parts
            have = cfg[role][group] if cfg is not None and role in cfg and group in cfg[role] else None
            if have is not None and name not in have:
                _usage_error(f"config.{key}: this config file's {role} has no {group[:-1]} {name!r} (it has "
                             f"{', '.join(sorted(have)) or 'none'}). Overrides change what the file sets; "
                             f"to add a {group[:-1]}, write it into a config file "
                             "(the terms are listed in dfkd_jax/objectives.py).")
        raise
    if not flags.FLAGS.workdir:
        _usage_error("--workdir is required: the folder for the run's checkpoints, metrics and results "
                     "(rerunning with the same folder resumes).")
    return parsed


def _config_path(argv) -> str | None:
    """The ``path[:arg]`` of ``--config`` in ``argv``, or None."""
    path = None
    for i, a in enumerate(argv[1:], 1):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    return path or None


def _load_config_file(argv):
    """The config ``--config path[:arg]`` names, loaded as config_flags would, or None where that fails
    (when an override fails, config_flags has not yet assigned the flag's value, so it is loaded here again)."""
    import importlib.util
    path = _config_path(argv)
    if not path:
        return None
    path, _, arg = path.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_dfkd_config_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # a bug in the file: config_flags' own traceback says more
        return None


def _listing() -> str:
    """The methods (each module's first docstring line) and the config files, for ``--help``."""
    import glob
    import os

    from dfkd_jax.methods import METHODS
    lines = ["", "Methods (config.method; choose one with its config file):"]
    for name, module in sorted(METHODS.items()):
        summary = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        if len(summary) > 96:
            summary = summary[:93].rsplit(" ", 1)[0] + " ..."
        lines.append(f"  {name:14s}{summary}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "configs", "*", "*.py")))
    if files:
        lines += ["", f"Config files ({root}):"]
        lines += [f"  {os.path.relpath(f, root)}" for f in files if "def get_config" in open(f).read()]
    return "\n".join(lines) + "\n"


def run():
    from absl import logging
    if any(a in ("-h", "-?", "--help", "--helpshort", "--helpfull") for a in sys.argv[1:]):
        main_module = sys.modules["__main__"]
        main_module.__doc__ = (main_module.__doc__ or __doc__) + _listing()
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
