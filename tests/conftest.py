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
