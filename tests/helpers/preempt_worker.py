"""A tiny resumable job on the training layer, for the real-signal tests (tests/test_preemption.py).

    python tests/helpers/preempt_worker.py WORKDIR STEPS

Fits a linear regression on a shuffled grain iterator for STEPS steps (checkpoint every 25, one metrics row per step,
a short sleep per step so a signal lands mid-run), resuming from WORKDIR/checkpoints; writes WORKDIR/final.json
(parameters as lists) when done. SIGTERM/SIGINT: the TrainLoop saves and exits non-zero.
"""

import json
import os
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vggrpo_jax import training


def main(workdir: str, total: int) -> None:
    rows = np.arange(120, dtype=np.float32).reshape(40, 3) / 120.0
    it = iter(grain.MapDataset.source(rows).shuffle(seed=3).repeat().batch(4).to_iter_dataset())
    tx = training.make_optimizer(training.OptimConfig(lr=0.05, schedule="cosine", warmup_steps=2), total_steps=total)
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    state = {"params": params, "opt": tx.init(params), "rng": jax.random.key(0)}
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=2)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state, data=it)

    @jax.jit
    def step_fn(state, x, step):
        key = jax.random.fold_in(state["rng"], step)
        target = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(key, (x.shape[0],))
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((x @ p["w"] + p["b"] - target) ** 2))(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return dict(state, params=optax.apply_updates(state["params"], updates), opt=opt), {"loss": loss}

    writer = training.MetricWriter(workdir)
    loop = training.TrainLoop(total, start, writer=writer, log_every=1, progress=False,
                              checkpoint=lambda s: ckpt.save(s, state, data=it), checkpoint_every=25,
                              checkpoint_wait=ckpt.wait)
    try:
        with loop:
            for step in loop:
                state, metrics = step_fn(state, next(it), step)
                time.sleep(0.01)
                loop.step_done(step, metrics)
    finally:
        ckpt.close()
        writer.close()
    with open(os.path.join(workdir, "final.json"), "w") as fh:
        json.dump({k: np.asarray(v).tolist() for k, v in jax.device_get(state["params"]).items()}, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
