"""The one training layer under every job: checkpoints, optimizer, metrics and the step loop.

    checkpoint.py  Checkpointer (orbax CheckpointManager: atomic, async, keep-N, exact resume incl. the data
                   iterator's position and JSON metadata, one layout check naming the differing leaf, restore at
                   given shardings; an unreadable step is reported in one line, moved to
                   <checkpoints>/damaged/<step> and the newest intact one is restored); save_params / restore_params for converted
                   weights
    optim.py       OptimConfig.from_config(config.optim) → make_optimizer(cfg, total_steps, mask=…): one optax chain
    metrics.py     MetricWriter (tensorboard + metrics.jsonl, process 0), read_metrics, StepTimer
    loop.py        TrainLoop: progress bar, log / checkpoint / eval every k, step time and samples/s, profiler
                   window (train.profile_steps → WORKDIR/profile), SIGTERM/SIGINT → save and stop

A job written on it (the whole resumable training loop):

    tx = training.make_optimizer(training.OptimConfig.from_config(config.optim), total_steps=T)
    state = {"params": params, "opt": tx.init(params), "rng": jax.random.key(config.seed)}
    it = dataset.to_iter_dataset().__iter__()                  # anything with get_state() / set_state()
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state, data=it)         # exact resume, iterator position included
    writer = training.MetricWriter(workdir)
    loop = training.TrainLoop(T, start, writer=writer, samples_per_step=B, log_every=10,
                              checkpoint=lambda s: ckpt.save(s, state, data=it), checkpoint_every=100,
                              checkpoint_wait=ckpt.wait, profile_steps=config.train.profile_steps,
                              workdir=workdir, desc="vae", postfix=("loss",))
    with loop:
        for step in loop:
            state, metrics = train_step(state, next(it))      # jit(..., donate_argnums=0)
            loop.step_done(step, metrics)
    ckpt.close(); writer.close()
"""

from vggrpo_jax.training.checkpoint import (
    CheckpointDamagedError,
    Checkpointer,
    LayoutMismatchError,
    check_layout,
    flatten,
    restore_params,
    save_params,
)
from vggrpo_jax.training.guard import SkipGuard, TrainingDiverged, guarded_update
from vggrpo_jax.training.loop import StopRequested, TrainLoop
from vggrpo_jax.training.metrics import MetricWriter, StepTimer, read_metrics
from vggrpo_jax.training.optim import OptimConfig, make_optimizer, make_schedule

__all__ = [
    "CheckpointDamagedError", "Checkpointer", "LayoutMismatchError", "MetricWriter", "OptimConfig", "StepTimer", "StopRequested", "TrainLoop",
    "SkipGuard", "TrainingDiverged", "check_layout", "flatten", "guarded_update", "make_optimizer", "make_schedule", "read_metrics", "restore_params", "save_params",
]
