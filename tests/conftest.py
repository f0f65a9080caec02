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
# The tests compile hundreds of small programs and run each a few times: XLA's backend (LLVM)
# optimisations take most of that time (6x on 2 cores) and buy nothing at test sizes. The test
# process and the command-line runs it starts also share a persistent compilation cache.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_TMP, "jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

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
