"""Scale-out: 2 processes x 2 simulated CPU devices through jax.distributed over loopback
give the result of 1 process with 4 devices (and of 1 process with 1 device), through the
functional API. Under -m slow: the default suite runs the same comparison through the command
line (tests/test_cli.py, 2 processes x 2 devices killed and resumed against 1 device)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(num_processes, local_devices, out):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    procs = [subprocess.Popen([sys.executable, WORKER, str(i), str(num_processes), str(port), str(local_devices),
                               str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return dict(np.load(out))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    multi = _launch(2, 2, tmp_path / "multi.npz")
    single = _launch(1, 4, tmp_path / "single.npz")
    one = _launch(1, 1, tmp_path / "one.npz")
    assert int(multi["devices"]) == 4 and int(multi["processes"]) == 2
    assert int(single["devices"]) == 4 and int(single["processes"]) == 1
    keys = [k for k in single if "/" in k]
    assert keys
    for k in keys:
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-4, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(one[k], single[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for k in ("accuracy", "agree"):
        assert float(multi[k]) == float(single[k]) == float(one[k])
