"""One process of a two-process CPU 'cluster' (run by tests/test_multihost.py)."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vggrpo_jax import parallel as par  # noqa: E402


def main(port: str, pid: int) -> None:
    par.initialize_distributed({"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2, "process_id": pid})
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = par.make_mesh({"data": 2, "fsdp": 4})
    # Each host contributes its own 4 rows of a global (8, 3) batch.
    local = np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * pid
    batch = par.host_local_to_global(local, mesh)
    assert batch.shape == (8, 3), batch.shape
    total = jax.jit(lambda x: jnp.sum(x, axis=0), out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))(batch)
    print("RESULT", " ".join(f"{v:.1f}" for v in np.asarray(total)), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
