"""The project's user-facing errors: input a user can fix (a config, a file, a dataset).

The command line prints their message and exits with status 1; any other exception is a
bug and keeps its traceback. Each class also derives from the matching built-in error, so
``except ValueError`` / ``except FileNotFoundError`` keep working for library users.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config value (or a combination of them) that cannot run."""


class ConfigChangedError(ConfigError):
    """A workdir's run was made with a different config than the one given to continue it."""


class TeacherNotFoundError(UserError, FileNotFoundError):
    """No teacher checkpoint where the config points, and training one was not allowed."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The raw files of a dataset are nowhere to be found; the message says how to provide them."""


class IncompatibleCheckpointError(UserError, ValueError):
    """A workdir's checkpoint holds a state of another structure than this version of dfkd_jax keeps."""
