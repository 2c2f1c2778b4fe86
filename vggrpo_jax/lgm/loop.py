"""The resumable fitting loop of both LGM stages (connector fitting per layer ℓ, and output alignment), on the
training layer (vggrpo_jax/training): its optimizer factory, checkpointer, metric writer and step loop.

A run is a pure function of (initial params, config): the batch of step s is `batch_fn(s)` (random access into a
grain MapDataset, so the data position *is* the step) and the step's randomness is fold_in(rng, s). A checkpoint
therefore needs only params, optimizer state, step and rng, and a run stopped at any saved step and resumed gives
the same parameters as an uninterrupted one. The checkpoint's json records the stage name, so a directory of
another stage is refused; the layout check of training.Checkpointer refuses another model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vggrpo_jax.training import Checkpointer, OptimConfig, TrainLoop, guarded_update, make_optimizer

# The reported LGM recipe: AdamW lr 2e−4, no weight decay, 100 warm-up steps, cosine decay, global-norm clip 1.0.
LGM_OPTIM = OptimConfig(name="adamw", lr=2e-4, warmup_steps=100, schedule="cosine", weight_decay=0.0, grad_clip=1.0)


LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict]]


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3, 4))
def _train_step(loss_fn: LossFn, optim: OptimConfig, total_steps: int, params, opt_state, frozen, batch, key):
    # Module-level and keyed on (loss_fn, optim, total_steps): a hashable loss object (a frozen dataclass) equal to
    # an earlier one reuses that compilation, so stopping and resuming, or a second run, does not recompile.
    tx = make_optimizer(optim, total_steps)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, key)
    params, opt_state, skipped = guarded_update(tx, grads, opt_state, params, loss)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), skipped=skipped)
    return params, opt_state, metrics


@dataclasses.dataclass
class FitResult:
    params: Any
    step: int
    history: list[dict]
    finished: bool


def fit(
    *,
    name: str,
    params: Any,
    frozen: Any,
    loss_fn: LossFn,
    batch_fn: Callable[[int], Any],
    optim: OptimConfig,
    total_steps: int,
    rng: jax.Array,
    ckpt_dir: str | None = None,
    save_every: int = 100,
    keep: int = 2,
    stop_after: int | None = None,
    writer: Any = None,
    log_every: int = 10,
    progress: bool = True,
    max_consecutive_skips: int = 10,
    profile_steps: int = 0,
    workdir: str | None = None,
) -> FitResult:
    """Minimises loss_fn(params, frozen, batch, rng) → (loss, metrics) for total_steps steps, resumably.

    Args:
      name: stage name (progress bar, metric prefix "<name>/", checkpoint json).
      params: trainable pytree (e.g. an nnx.State; copied, the caller's arrays stay valid); frozen: pytree passed
        through unchanged (jit argument, not a closure constant, so big frozen weights are not baked into the
        program).
      loss_fn: (params, frozen, batch, rng) → (loss, metrics); hashable (e.g. a frozen dataclass) to share
        compilations between calls.
      batch_fn: step → batch (pytree of arrays); must be a pure function of the step.
      optim: the optimizer (training.make_optimizer(optim, total_steps); LGM_OPTIM is the reported recipe).
      rng: a typed or raw PRNG key; step s uses fold_in(rng, s).
      ckpt_dir: checkpoint directory; when it holds a checkpoint of this stage, training resumes from its latest step.
      stop_after: stop (after saving) once this step is reached, as an interrupted run would; None = run to the end.
      writer: a training.MetricWriter or None (metrics, step time and samples/s every log_every steps).
      max_consecutive_skips: raise training.TrainingDiverged after this many updates in a row were skipped for a
        non-finite loss, gradient or result (each such update leaves params and optimizer state unchanged); 0 = never.
      profile_steps, workdir: a profiler trace of that many steps (from this call's second step) in
        `workdir/profile` (training.TrainLoop's window; 0 = none).
    Returns FitResult(params, step reached, metric history of this call, finished = step == total_steps).
    """
    rng = jax.random.key_data(rng) if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key) else rng
    rng = jnp.asarray(rng, jnp.uint32)
    params = jax.tree.map(jnp.array, params)  # our own buffers: the step donates them
    state = {"params": params, "opt": make_optimizer(optim, total_steps).init(params), "rng": rng}
    step = 0
    ckpt = None
    if ckpt_dir is not None:
        ckpt = Checkpointer(ckpt_dir, keep=keep, async_save=False)
        if ckpt.latest_step() is not None:
            meta = ckpt.read_meta()
            if meta.get("stage") != name:
                raise ValueError(f"{ckpt_dir}: checkpoint belongs to stage {meta.get('stage')!r}, not {name!r}")
            step, state, meta = ckpt.restore(state)
            if int(meta.get("data_position", step)) != step:
                raise ValueError(f"{ckpt_dir}: data position {meta['data_position']} differs from step {step}")

    def save(s: int) -> None:
        if ckpt is not None:
            ckpt.save(s, state, meta={"stage": name, "step": s, "data_position": s, "total_steps": total_steps})

    end = total_steps if stop_after is None else min(total_steps, int(stop_after))
    batch_size = None
    history: list[dict] = []
    loop = TrainLoop(end, step, writer=writer, metric_prefix=f"{name}/", log_every=log_every, checkpoint=save,
                     checkpoint_every=save_every, desc=name, postfix=("loss",), progress=progress,
                     max_consecutive_skips=max_consecutive_skips, profile_steps=profile_steps, workdir=workdir)
    base_key = jax.random.wrap_key_data(state["rng"])
    try:
        with loop:
            for step in loop:
                batch = batch_fn(step - 1)
                if batch_size is None:
                    batch_size = int(jax.tree.leaves(batch)[0].shape[0])
                    loop.timer.samples_per_step = batch_size
                p, o, metrics = _train_step(loss_fn, optim, total_steps, state["params"], state["opt"], frozen, batch,
                                            jax.random.fold_in(base_key, step - 1))
                state = {"params": p, "opt": o, "rng": state["rng"]}
                values = loop.step_done(step, metrics)
                if step % log_every == 0 or step == end:
                    history.append({k: v for k, v in values.items() if not k.startswith("perf/")} | {"step": step})
    finally:
        if ckpt is not None:
            ckpt.close()
    return FitResult(params=state["params"], step=step, history=history, finished=step >= total_steps)


__all__ = ["FitResult", "LGM_OPTIM", "OptimConfig", "fit"]
