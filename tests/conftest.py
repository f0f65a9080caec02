"""Test session setup: 4 simulated CPU devices, and nothing written outside tmp folders.

JAX must see the device count before it initialises, hence the import-time config.
"""

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="dfkd_jax_tests_")
os.environ["DFKD_JAX_CACHE"] = os.path.join(_TMP, "cache")
os.environ["DFKD_JAX_DATA_DIR"] = os.path.join(_TMP, "tfds")
os.environ["DFKD_JAX_NO_DOWNLOAD"] = "1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

# CI installs the optional extras (README's test command: tools/install.sh --dev) and sets this variable,
# so that the tests marked `torch` (and the TensorBoard check) cannot skip silently there.
REQUIRE_EXTRAS_ENV = "DFKD_JAX_REQUIRE_EXTRAS"


def pytest_configure(config):
    if os.environ.get(REQUIRE_EXTRAS_ENV):
        import importlib.util

        import pytest
        missing = [name for name in ("torch", "tensorboardX") if importlib.util.find_spec(name) is None]
        if missing:
            raise pytest.UsageError(f"{REQUIRE_EXTRAS_ENV} is set but {', '.join(missing)} is not installed: "
                                    "run `bash tools/install.sh --dev` (or unset it to skip those tests).")
