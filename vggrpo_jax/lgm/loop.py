"""One resumable training loop for both LGM stages (connector fitting per layer ℓ, and output alignment).

A run is a pure function of (initial params, config): the batch of step s is `batch_fn(s)` (random access into a
grain MapDataset, so the data position *is* the step) and the step's randomness is fold_in(rng, s). A checkpoint
therefore needs only params, optimizer state, step and rng, and a run stopped at any saved step and resumed gives
the same parameters as an uninterrupted one.

Checkpoints are orbax CheckpointManager steps (atomic: written to a temporary directory and renamed), holding the
flattened leaves of {params, opt_state, rng} plus a json with the step, the data position and the stage name; the
restore checks leaf count, shapes and dtypes against the live state and raises naming the first mismatch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (or constant), global-norm clipping.

    Defaults are the reported LGM recipe: lr 2e−4, no weight decay, 100 warm-up steps, cosine, clip 1.0.
    """

    lr: float = 2e-4
    warmup_steps: int = 100
    schedule: str = "cosine"
    end_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0

    @classmethod
    def from_dict(cls, d: Any) -> "OptimConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown optimizer config keys {sorted(unknown)}")
        return cls(**d)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"optim.schedule {cfg.schedule!r} must be 'cosine' or 'constant'")
    if total_steps < 1:
        raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
    warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.end_lr_fraction
        )
    else:
        lr = optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)], [warmup]
        )
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict]]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_step(loss_fn: LossFn, optim: OptimConfig, total_steps: int, params, opt_state, frozen, batch, key):
    # Module-level and keyed on (loss_fn, optim, total_steps): a hashable loss object (a frozen dataclass) equal to
    # an earlier one reuses that compilation, so stopping and resuming, or a second run, does not recompile.
    tx = make_optimizer(optim, total_steps)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
    return params, opt_state, metrics


@dataclasses.dataclass
class FitResult:
    params: Any
    step: int
    history: list[dict]
    finished: bool


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _layout(flat: dict[str, Any]) -> list:
    return [[list(np.shape(v)), str(jnp.asarray(v).dtype)] for _, v in sorted(flat.items())]


def _check_layout(saved: list, live: dict[str, Any], where: str) -> None:
    """Raises naming the first array whose shape/dtype differs between the checkpoint and the live state."""
    mine = _layout(live)
    if len(saved) != len(mine):
        raise ValueError(f"{where}: checkpoint has {len(saved)} arrays, the live train state has {len(mine)}")
    for i, (a, b) in enumerate(zip(saved, mine)):
        if list(a[0]) != list(b[0]) or a[1] != b[1]:
            raise ValueError(f"{where}: array {i} is {a} in the checkpoint but {b} in the live state "
                             "(different model or config?)")


def _restore_into(template: Any, flat: dict[str, Any], where: str) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"{where}: checkpoint has {len(flat)} arrays, the live train state has {len(leaves)}")
    out = []
    for i, leaf in enumerate(leaves):
        got = flat[f"{i:05d}"]
        if tuple(got.shape) != tuple(np.shape(leaf)) or np.dtype(got.dtype) != np.dtype(jnp.asarray(leaf).dtype):
            raise ValueError(
                f"{where}: array {i} is {got.shape} {got.dtype} in the checkpoint but "
                f"{np.shape(leaf)} {jnp.asarray(leaf).dtype} in the live state (different model or config?)"
            )
        out.append(jnp.asarray(got))
    return jax.tree.unflatten(treedef, out)


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
) -> FitResult:
    """Minimises loss_fn(params, frozen, batch, rng) → (loss, metrics) for total_steps steps, resumably.

    Args:
      name: stage name (progress bar, metric prefix, checkpoint json).
      params: trainable pytree (e.g. an nnx.State); frozen: pytree passed through unchanged (jit argument, not a
        closure constant, so big frozen weights are not baked into the program).
      loss_fn: (params, frozen, batch, rng) → (loss, metrics); hashable (e.g. a frozen dataclass) to share
        compilations between calls.
      batch_fn: step → batch (pytree of arrays); must be a pure function of the step.
      optim: the optimizer (make_optimizer(optim, total_steps)).
      rng: a typed or raw PRNG key; step s uses fold_in(rng, s).
      ckpt_dir: orbax directory; when it holds a checkpoint of this stage, training resumes from its latest step.
      stop_after: stop (after saving) once this step is reached, as an interrupted run would; None = run to the end.
      writer: a tensorboardX SummaryWriter or None.
    Returns FitResult(params, step reached, metric history of this call, finished = step == total_steps).
    """
    rng = jax.random.key_data(rng) if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key) else rng
    rng = jnp.asarray(rng, jnp.uint32)
    opt_state = make_optimizer(optim, total_steps).init(params)
    step = 0
    manager = None
    if ckpt_dir is not None:
        manager = ocp.CheckpointManager(
            os.path.abspath(ckpt_dir),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )
        latest = manager.latest_step()
        if latest is not None:
            live = _flatten({"params": params, "opt": opt_state, "rng": rng})
            meta = manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if meta.get("stage") != name:
                raise ValueError(f"{ckpt_dir}: checkpoint belongs to stage {meta.get('stage')!r}, not {name!r}")
            _check_layout(meta.get("layout", []), live, ckpt_dir)
            restored = manager.restore(
                latest,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(
                        {k: jax.ShapeDtypeStruct(np.shape(v), jnp.asarray(v).dtype) for k, v in live.items()}
                    ),
                ),
            )
            state = _restore_into({"params": params, "opt": opt_state, "rng": rng}, restored["state"], ckpt_dir)
            params, opt_state, rng = state["params"], state["opt"], state["rng"]
            step = int(meta["step"])
            if int(meta.get("data_position", step)) != step:
                raise ValueError(f"{ckpt_dir}: data position {meta['data_position']} differs from step {step}")

    def save(s: int) -> None:
        if manager is None:
            return
        manager.save(
            s,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_flatten({"params": params, "opt": opt_state, "rng": rng})),
                meta=ocp.args.JsonSave({"stage": name, "step": s, "data_position": s, "total_steps": total_steps,
                                        "layout": _layout(_flatten({"params": params, "opt": opt_state, "rng": rng}))}),
            ),
            force=True,
        )
        manager.wait_until_finished()

    end = total_steps if stop_after is None else min(total_steps, int(stop_after))
    history: list[dict] = []
    bar = None
    if progress and step < end:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=total_steps, initial=step, desc=name, leave=False, dynamic_ncols=True)
    base_key = jax.random.wrap_key_data(rng)
    while step < end:
        batch = batch_fn(step)
        params, opt_state, metrics = _train_step(
            loss_fn, optim, total_steps, params, opt_state, frozen, batch, jax.random.fold_in(base_key, step)
        )
        step += 1
        if step % log_every == 0 or step == end:
            m = {k: float(v) for k, v in metrics.items()}
            m["step"] = step
            history.append(m)
            if writer is not None:
                for k, v in m.items():
                    if k != "step":
                        writer.add_scalar(f"{name}/{k}", v, step)
            if bar is not None:
                bar.set_postfix(loss=f"{m['loss']:.4g}")
        if bar is not None:
            bar.update(1)
        if step % save_every == 0 or step == end:
            save(step)
    if bar is not None:
        bar.close()
    if manager is not None:
        manager.close()
    return FitResult(params=params, step=step, history=history, finished=step >= total_steps)


__all__ = ["FitResult", "OptimConfig", "fit", "make_optimizer"]
