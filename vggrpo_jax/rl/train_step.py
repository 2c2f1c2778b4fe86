"""One GRPO optimizer update: gradient accumulation over micro-batches × trained steps, grad-norm clip, optax
update of the TRAINABLE pytree only, EMA, and a guard that skips the update on any non-finite input or result.

The trainable pytree (e.g. the LoRA adapters) and the frozen pytree (the base network) are separate arguments;
only the trainable one has gradients, optimizer state and an EMA. Any pytrees work (dicts, nnx.State).

    state = init_train_state(lora_params, optimizer)
    train_step = make_train_step(policy_fn, reference_fn, optimizer, config)
    state, metrics = train_step(state, frozen, traj, advantages, cond, uncond)

Sharding: jit with no shardings follows the input shardings (place the batch with parallel.shard_batch, under
`jax.set_mesh(mesh)`); or pass explicit `in_shardings` / `out_shardings`, forwarded to jax.jit as they are.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from vggrpo_jax.parallel import constrain
from vggrpo_jax.rl.ema import EmaConfig, ema_update
from vggrpo_jax.rl.grpo import METRIC_NAMES, GrpoConfig, PolicyFn, step_inputs, step_loss
from vggrpo_jax.rl.rollout import Trajectory, tree_batch_size


@flax.struct.dataclass
class TrainState:
    """step: number of APPLIED updates (int32); num_skipped: updates skipped by the non-finite guard (int32);
    params: trainable pytree; opt_state: its optax state; ema_params: EMA of params (None without EMA)."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    num_skipped: jax.Array


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    """num_micro_batches: the batch is split into this many equal micro-batches (gradient accumulation).
    max_grad_norm: global-norm clip of the averaged gradient (None: no clip). ema: None disables the EMA."""

    num_micro_batches: int = 1
    max_grad_norm: float | None = 1.0
    ema: EmaConfig | None = EmaConfig()

    def __post_init__(self):
        if int(self.num_micro_batches) != self.num_micro_batches or self.num_micro_batches < 1:
            raise ValueError(f"UpdateConfig.num_micro_batches must be a positive int, got {self.num_micro_batches}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"UpdateConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


def make_optimizer(
    learning_rate: float | optax.Schedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """AdamW with Flow-GRPO's Wan defaults (lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 1e-4)."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def init_train_state(params: Any, optimizer: optax.GradientTransformation, ema: bool = True) -> TrainState:
    """A fresh TrainState; the EMA starts as a copy of params (its own buffers, so params can be donated)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        num_skipped=jnp.zeros((), jnp.int32),
    )


def _split_batch(x: jax.Array, num: int, axis: int) -> jax.Array:
    """(..., B, ...) -> (num, ..., B/num, ...): micro-batch m holds rows m, num+m, 2·num+m, ...

    Taking every num-th row (not contiguous blocks) keeps each micro-batch spread over the devices that hold the
    batch, so splitting moves no data.
    """
    b = x.shape[axis]
    if b % num:
        raise ValueError(f"batch {b} (axis {axis} of shape {x.shape}) is not divisible by {num} micro-batches")
    x = x.reshape(x.shape[:axis] + (b // num, num) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis + 1, 0)


def _batch_constrain(x: jax.Array, axis: int = 0) -> jax.Array:
    axes = [None] * x.ndim
    axes[axis] = "batch"
    return constrain(x, tuple(axes))


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def accumulate_gradients(
    trainable: Any,
    frozen: Any,
    traj: Trajectory,
    advantages: jax.Array,
    cond: Any,
    uncond: Any | None,
    *,
    policy_fn: PolicyFn,
    reference_fn: PolicyFn | None,
    config: GrpoConfig,
    num_micro_batches: int = 1,
) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
    """(mean loss, mean gradient (float32, structure of trainable), mean metrics) over micro-batches × trained steps.

    One forward+backward per (micro-batch, step), accumulated in a scan: memory of one step's activations, like
    Flow-GRPO's per-timestep backward. The result equals jax.grad of grpo.grpo_loss over the whole batch.
    """
    b = advantages.shape[0]
    if traj.latents.shape[1] != b:
        raise ValueError(f"trajectory batch {traj.latents.shape[1]} != advantages batch {b}")
    m = num_micro_batches
    if uncond is not None:
        if tree_batch_size(uncond, "uncond") == 1:
            uncond = jax.tree.map(lambda u, c: jnp.broadcast_to(u, c.shape).astype(c.dtype), uncond, cond)
    micro = {
        "latents": _split_batch(traj.latents, m, axis=1),
        "log_probs": _split_batch(traj.log_probs, m, axis=1),
        "advantages": _split_batch(advantages, m, axis=0),
        "cond": jax.tree.map(lambda c: _split_batch(c, m, 0), cond),
        "uncond": None if uncond is None else jax.tree.map(lambda u: _split_batch(u, m, 0), uncond),
    }
    steps = traj.train_steps
    grad_fn = jax.value_and_grad(
        functools.partial(step_loss, policy_fn=policy_fn, reference_fn=reference_fn, config=config), has_aux=True
    )
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    zero_metrics = {k: jnp.zeros((), jnp.float32) for k in METRIC_NAMES}
    zero_metrics["ratio_min"] = jnp.asarray(jnp.inf, jnp.float32)
    zero_metrics["ratio_max"] = jnp.asarray(-jnp.inf, jnp.float32)

    def add_metrics(acc, new):
        def combine(k):
            return jnp.minimum if k.endswith("_min") else jnp.maximum if k.endswith("_max") else jnp.add

        return {k: combine(k)(acc[k], new[k]) for k in acc}

    def micro_body(carry, mb):
        sub = traj.replace(latents=mb["latents"], log_probs=mb["log_probs"])
        adv = _batch_constrain(mb["advantages"])
        cond_m = jax.tree.map(_batch_constrain, mb["cond"])
        uncond_m = None if mb["uncond"] is None else jax.tree.map(_batch_constrain, mb["uncond"])

        def step_body(carry, j):
            g_acc, m_acc = carry
            inp = step_inputs(sub, j)
            inp["x"] = _batch_constrain(inp["x"])
            inp["x_next"] = _batch_constrain(inp["x_next"])
            (_, metrics), grads = grad_fn(trainable, frozen, advantages=adv, cond=cond_m, uncond=uncond_m, **inp)
            g_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), g_acc, grads)
            return (g_acc, add_metrics(m_acc, metrics)), None

        carry, _ = jax.lax.scan(step_body, carry, steps)
        return carry, None

    (g_sum, m_sum), _ = jax.lax.scan(micro_body, (zeros, zero_metrics), micro)
    count = float(m) * steps.shape[0]
    grads = jax.tree.map(lambda g: g / count, g_sum)
    metrics = {k: (v if k.endswith(("_min", "_max")) else v / count) for k, v in m_sum.items()}
    return metrics["loss"], grads, metrics


def make_train_step(
    policy_fn: PolicyFn,
    reference_fn: PolicyFn | None,
    optimizer: optax.GradientTransformation,
    config: GrpoConfig,
    update: UpdateConfig = UpdateConfig(),
    *,
    jit: bool = True,
    in_shardings: Any = None,
    out_shardings: Any = None,
    donate_state: bool = False,
):
    """Builds train_step(state, frozen, traj, advantages, cond, uncond, rewards=None) -> (state, metrics).

    advantages: (B,) from rewards.group_advantages; rewards: optional (B,) or (B, k) raw rewards, only checked for
    finiteness. The update is SKIPPED (params, optimizer state, EMA and step unchanged, num_skipped += 1,
    metrics["skipped"] = 1) when the loss, the gradient, the advantages, the stored log-probs or the rewards contain
    a NaN/Inf, or when the update itself would make the new parameters, optimizer state or EMA non-finite (e.g. a
    NaN learning-rate schedule or an overflowing Adam moment): non-finite values never enter the state, so never a
    checkpoint. metrics: loss, policy_loss, kl, clipfrac, approx_kl, ratio_mean/min/max, grad_norm (before clipping),
    skipped, and the flags nonfinite_{loss,grad,inputs,update}.
    """
    if update.ema is not None and update.ema.every < 1:
        raise ValueError("EMA interval must be >= 1")

    def train_step(state: TrainState, frozen: Any, traj: Trajectory, advantages: jax.Array, cond: Any,
                   uncond: Any | None, rewards: jax.Array | None = None):
        if (state.ema_params is None) != (update.ema is None):
            raise ValueError("TrainState.ema_params must be present exactly when UpdateConfig.ema is set")
        loss, grads, metrics = accumulate_gradients(
            state.params, frozen, traj, advantages, cond, uncond, policy_fn=policy_fn, reference_fn=reference_fn,
            config=config, num_micro_batches=update.num_micro_batches,
        )
        grad_norm = optax.tree.norm(grads)
        inputs_ok = _all_finite((advantages, traj.log_probs, rewards))
        loss_ok = jnp.isfinite(loss)
        grad_ok = jnp.isfinite(grad_norm)
        ok = inputs_ok & loss_ok & grad_ok

        if update.max_grad_norm is not None:
            # Same as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
            scale = jnp.minimum(1.0, update.max_grad_norm / (grad_norm + 1e-6))
            grads = jax.tree.map(lambda g: g * scale, grads)
        # A skipped update must not leave NaN in any intermediate either: feed zeros to the optimizer in that case.
        grads = jax.tree.map(lambda g, p: jnp.where(ok, g, 0.0).astype(p.dtype), grads, state.params)
        updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        new_ema = None if update.ema is None else ema_update(state.ema_params, new_params, state.step, update.ema)
        result_ok = _all_finite((new_params, new_opt, new_ema))
        ok = ok & result_ok

        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            params=keep(new_params, state.params),
            opt_state=keep(new_opt, state.opt_state),
            ema_params=None if new_ema is None else keep(new_ema, state.ema_params),
            num_skipped=state.num_skipped + (~ok).astype(jnp.int32),
        )
        metrics = dict(metrics)
        metrics.update(
            grad_norm=grad_norm,
            skipped=(~ok).astype(jnp.float32),
            nonfinite_loss=(~loss_ok).astype(jnp.float32),
            nonfinite_grad=(~grad_ok).astype(jnp.float32),
            nonfinite_inputs=(~inputs_ok).astype(jnp.float32),
            nonfinite_update=(~result_ok).astype(jnp.float32),
        )
        return new_state, metrics

    if not jit:
        return train_step
    kwargs = {}
    if in_shardings is not None:
        kwargs["in_shardings"] = in_shardings
    if out_shardings is not None:
        kwargs["out_shardings"] = out_shardings
    if donate_state:
        kwargs["donate_argnums"] = (0,)
    return jax.jit(train_step, **kwargs)
