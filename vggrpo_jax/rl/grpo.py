"""The Flow-GRPO objective: clipped policy-ratio surrogate on the SDE transition log-probs + β·KL to the reference.

Model-agnostic: the network enters as a `PolicyFn`

    policy_fn(trainable, frozen, x (2B, ...), t (2B,) int32, text) -> v (2B, ...)

with the interleaved CFG batch of rollout.py (row 2b: prompt, row 2b+1: negative prompt), and the reference policy as
a second `PolicyFn` of the same signature (for LoRA: the same network with the adapters switched off; it receives the
trainable pytree under stop_gradient so a module that needs it to rebuild its graph can have it).

Per trained step j and batch b (A = advantage, ε = clip_eps):
    r      = exp(log p_θ(x_{j+1}|x_j) − log p_old)
    policy = mean_b max(−A·r, −A·clip(r, 1−ε, 1+ε))
    KL     = mean_b mean_elements (μ_θ − μ_ref)² / (2·std_j²)        (exact KL of two Gaussians with equal std)
    loss_j = policy + β·KL;      the objective is the mean of loss_j over the trained steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vggrpo_jax.rl.rollout import Trajectory, cfg_text, guided_velocity
from vggrpo_jax.rl.sde import NoiseRule, gaussian_kl_same_std, log_prob, sde_step_mean_std

PolicyFn = Callable[[Any, Any, jax.Array, jax.Array, Any], jax.Array]

METRIC_NAMES = ("loss", "policy_loss", "kl", "clipfrac", "approx_kl", "ratio_mean", "ratio_min", "ratio_max")


@dataclasses.dataclass(frozen=True)
class GrpoConfig:
    """Hyper-parameters of the objective (defaults: Flow-GRPO on Wan). Hashable: a static argument of jit.

    noise_rule: the SDE noise rule used by the rollout (must be the same, or the log-probs do not match).
    clip_eps: PPO clip range ε. beta: KL weight β (0 skips the reference pass). cfg_scale: CFG w, as in the rollout.
    """

    noise_rule: NoiseRule
    clip_eps: float = 1e-3
    beta: float = 0.004
    cfg_scale: float = 4.5

    def __post_init__(self):
        if not isinstance(self.noise_rule, NoiseRule):
            raise TypeError(f"GrpoConfig.noise_rule must be a NoiseRule, got {type(self.noise_rule).__name__}")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"GrpoConfig.clip_eps must lie in (0, 1), got {self.clip_eps}")
        if self.beta < 0:
            raise ValueError(f"GrpoConfig.beta must be >= 0, got {self.beta}")


def step_loss(
    trainable: Any,
    frozen: Any,
    *,
    policy_fn: PolicyFn,
    reference_fn: PolicyFn | None,
    config: GrpoConfig,
    x: jax.Array,
    x_next: jax.Array,
    log_prob_old: jax.Array,
    sigma: jax.Array,
    sigma_next: jax.Array,
    t: jax.Array,
    advantages: jax.Array,
    cond: Any,
    uncond: Any | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of ONE denoising step for one (micro-)batch and its metrics (all float32 scalars).

    x, x_next: (B, ...) stored latents of the step; log_prob_old: (B,) stored at rollout; sigma, sigma_next: scalars;
    t: scalar int timestep; advantages: (B,); cond/uncond: text pytrees with leading dim B (uncond may be 1 or None).
    """
    b = x.shape[0]
    if advantages.shape != (b,) or log_prob_old.shape != (b,):
        raise ValueError(f"advantages {advantages.shape} and log_prob_old {log_prob_old.shape} must be ({b},)")
    if config.beta > 0 and reference_fn is None:
        raise ValueError("GrpoConfig.beta > 0 needs a reference_fn (the policy with the adapters disabled)")
    tb = jnp.full((b,), t, jnp.int32)
    text2 = None if uncond is None else cfg_text(cond, uncond, b)

    v = guided_velocity(functools.partial(policy_fn, trainable, frozen), x, tb, cond, uncond, config.cfg_scale, text2)
    mean, std = sde_step_mean_std(x, v, sigma, sigma_next, config.noise_rule)
    logp = log_prob(x_next, mean, std)

    log_ratio = logp - log_prob_old.astype(jnp.float32)
    ratio = jnp.exp(log_ratio)
    adv = advantages.astype(jnp.float32)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
    policy_loss = jnp.mean(jnp.maximum(unclipped, clipped))

    if config.beta > 0:
        ref_fn = functools.partial(reference_fn, jax.lax.stop_gradient(trainable), frozen)
        v_ref = jax.lax.stop_gradient(guided_velocity(ref_fn, x, tb, cond, uncond, config.cfg_scale, text2))
        mean_ref, _ = sde_step_mean_std(x, v_ref, sigma, sigma_next, config.noise_rule)
        kl = jnp.mean(gaussian_kl_same_std(mean, mean_ref, std))
    else:
        kl = jnp.zeros((), jnp.float32)

    loss = policy_loss + config.beta * kl
    ratio_sg = jax.lax.stop_gradient(ratio)
    log_ratio_sg = jax.lax.stop_gradient(log_ratio)
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "kl": kl,
        "clipfrac": jnp.mean((jnp.abs(ratio_sg - 1.0) > config.clip_eps).astype(jnp.float32)),
        "approx_kl": 0.5 * jnp.mean(log_ratio_sg**2),
        "ratio_mean": jnp.mean(ratio_sg),
        "ratio_min": jnp.min(ratio_sg),
        "ratio_max": jnp.max(ratio_sg),
    }
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def step_inputs(traj: Trajectory, j: jax.Array) -> dict[str, jax.Array]:
    """The stored quantities of step j (may be traced) of a trajectory, as keyword arguments of step_loss."""
    return {
        "x": traj.latents[j],
        "x_next": traj.latents[j + 1],
        "log_prob_old": traj.log_probs[j],
        "sigma": traj.sigmas[j],
        "sigma_next": traj.sigmas[j + 1],
        "t": traj.timesteps[j],
    }


def _reduce_metrics(per_step: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Averages per-step metrics over the leading step axis (min/max where the name says so)."""
    out = {}
    for k, v in per_step.items():
        out[k] = jnp.min(v) if k.endswith("_min") else jnp.max(v) if k.endswith("_max") else jnp.mean(v)
    return out


def grpo_loss(
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
    step_indices: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO objective over the whole batch, averaged over the trained steps (traj.train_steps by default).

    Differentiable in `trainable`. Holds every trained step's activations for the backward pass; the train step
    (train_step.py) computes the same gradient one step at a time instead.
    """
    steps = traj.train_steps if step_indices is None else jnp.asarray(step_indices, jnp.int32)
    if steps.ndim != 1:
        raise ValueError(f"step_indices must be 1-D, got shape {steps.shape}")
    fn = functools.partial(
        step_loss, trainable, frozen, policy_fn=policy_fn, reference_fn=reference_fn, config=config,
        advantages=advantages, cond=cond, uncond=uncond,
    )

    def body(carry, j):
        loss, metrics = fn(**step_inputs(traj, j))
        return carry, (loss, metrics)

    _, (losses, metrics) = jax.lax.scan(body, None, steps)
    return jnp.mean(losses), _reduce_metrics(metrics)
