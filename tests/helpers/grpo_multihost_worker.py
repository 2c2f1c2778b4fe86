"""One process of a GRPO run on a 1- or 2-process CPU 'cluster' with 8 devices in all (run by tests/test_multihost.py).

    python grpo_multihost_worker.py '<json spec>'

spec: port, process_id, num_processes, lgm_dir, workdir, out (a directory), steps (GRPO iterations to run and
checkpoint; 0 = none), restore_from (a workdir whose newest checkpoint is restored afterwards, or "").
Process 0 writes to `out`: metrics.json (each iteration's metrics), state.npz (the whole train state after the
iterations, gathered from all hosts), restored.npz (the state restored from `restore_from`). Every process writes
prompts_<process_id>.json: the prompt indices it read for the first 6 batches.
"""

import json
import os
import sys

SPEC = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // SPEC['num_processes']}"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from test_train import _config  # noqa: E402

from vggrpo_jax.checkpoint import TrainCheckpointer  # noqa: E402
from vggrpo_jax.data.pipeline import PromptBatches  # noqa: E402
from vggrpo_jax.train import Run, _flatten  # noqa: E402


def _say(what: str) -> None:
    print(f"[worker {SPEC['process_id']}/{SPEC['num_processes']}] {what}", flush=True)


def _gathered(state) -> dict:
    flat = _flatten(state)
    return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in flat.items()}


def main() -> None:
    pid, nproc = int(SPEC["process_id"]), int(SPEC["num_processes"])
    c = _config(SPEC["lgm_dir"], max(int(SPEC["steps"]), 1))
    c.mesh.data, c.mesh.fsdp = 2, -1  # the same (data 2, fsdp 4) mesh on 1 and on 2 processes
    if nproc > 1:
        c.distributed.coordinator_address = f"127.0.0.1:{SPEC['port']}"
        c.distributed.num_processes, c.distributed.process_id = nproc, pid
    os.makedirs(SPEC["workdir"], exist_ok=True)
    run = Run(c, SPEC["workdir"])
    _say("built the run")
    assert jax.process_count() == nproc and jax.device_count() == 8, (jax.process_count(), jax.device_count())
    out = SPEC["out"]
    os.makedirs(out, exist_ok=True)

    # The prompts this host reads, from a fresh iterator with the run's own settings.
    probe = PromptBatches(len(run.prompts), int(c.rl.prompts_per_batch), seed=int(c.seed))
    with open(os.path.join(out, f"prompts_{pid}.json"), "w") as fh:
        json.dump([next(probe) for _ in range(6)], fh)

    history = []
    for _ in range(int(SPEC["steps"])):
        history.append(run.step())
        run.save()
        _say(f"iteration {run.iteration} done and saved")
    run.checkpoints.wait()
    if int(SPEC["steps"]):
        state = _gathered(run.state)
        if pid == 0:
            np.savez(os.path.join(out, "state.npz"), **state)
            with open(os.path.join(out, "metrics.json"), "w") as fh:
                json.dump(history, fh)
    if SPEC["restore_from"]:
        run.checkpoints.close()
        run.checkpoints = TrainCheckpointer(os.path.join(SPEC["restore_from"], "checkpoints"))
        assert run.restore()
        _say(f"restored {SPEC['restore_from']} at iteration {run.iteration}")
        restored = _gathered(run.state)
        if pid == 0:
            np.savez(os.path.join(out, "restored.npz"), **restored, __iteration__=np.asarray(run.iteration))
    run.checkpoints.close()
    _say("closed")
    if nproc > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
