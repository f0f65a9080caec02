"""One process of the multi-process test: N simulated CPU devices, jax.distributed over loopback.

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS OUT.npz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    process_id, num_processes, port, local_devices, out = sys.argv[1:6]
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_num_cpu_devices", int(local_devices))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if int(num_processes) > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(num_processes),
                                   process_id=int(process_id), initialization_timeout=120)
    import numpy as np
    from jax.experimental import multihost_utils

    from dfkd_jax.engine.distiller import Distiller
    from tests.helpers import random_teacher, tiny_config

    config = tiny_config("dafl")
    for section in (config.generator, config.student):
        section.optimizer, section.lr = "sgd", 0.01
    config.student.batch = "pool"
    config.student.pool_size = 32
    d = Distiller.from_config(config, random_teacher())
    state = d.init(0)
    for _ in range(3):
        state, metrics = d.round(state)
    params = multihost_utils.process_allgather(state.student.params, tiled=True)
    x = np.arange(16 * 32 * 32, dtype=np.float32).reshape(16, 32, 32, 1) / 1e4
    ev = d.evaluator.evaluate(state, x, np.arange(16) % 10, batch_size=8)
    if jax.process_index() == 0:
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
        np.savez(out, devices=jax.device_count(), processes=jax.process_count(), accuracy=ev["accuracy"],
                 agree=ev["agree"], **flat)


if __name__ == "__main__":
    main()
