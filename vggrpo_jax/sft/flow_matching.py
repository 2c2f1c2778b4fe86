"""Rectified-flow (flow-matching) training objective on the Wan schedule.

Convention (rl/, rl/schedule.py): x_σ = (1−σ)·x0 + σ·ε with ε ~ N(0, I); the DiT predicts the velocity
v = dx_σ/dσ = ε − x0 and is conditioned on the integer timestep t = trunc(1000·σ) (`rl.schedule.timesteps`).

Training-time σ (diffusers' FlowMatchEulerDiscreteScheduler as its training scripts use it, and Wan's trainers):
draw u ∈ (0, 1] — uniformly, or logit-normal (SD3's "logit_normal" density: u = sigmoid(N(m, s²))) — put it on the
scheduler's grid of `num_train_timesteps` training steps, and apply the Wan shift

    σ = shift·u / (1 + (shift − 1)·u),

the same map `rl.schedule.wan_sigmas` applies to the sampling grid, so the noise levels trained on are those the
sampler visits. Shift > 1 spends more training on high noise (where a video's layout and motion are decided).

The loss is the mean squared error ‖v_θ(x_σ, t, c) − (ε − x0)‖² in fp32 ("none" weighting), per sample then
averaged over the batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

TIME_SAMPLING = ("uniform", "logit_normal")


@dataclasses.dataclass(frozen=True)
class FlowMatchingConfig:
    """shift: the Wan shift (3.0 = this project's rollout schedule, `rl.schedule.wan_sigmas`; Wan's own T2V
    scripts use 3.0 at 480p and 5.0 at 720p). time_sampling / logit_mean / logit_std: the density of u.
    num_train_timesteps: the scheduler's training grid (1000 in diffusers and Wan)."""

    shift: float = 3.0
    time_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    num_train_timesteps: int = 1000

    def __post_init__(self):
        if not self.shift > 0:
            raise ValueError(f"flow matching: shift must be > 0, got {self.shift}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(f"flow matching: time_sampling must be one of {TIME_SAMPLING}, got "
                             f"{self.time_sampling!r}")
        if self.num_train_timesteps < 2 or self.logit_std <= 0:
            raise ValueError("flow matching: num_train_timesteps must be ≥ 2 and logit_std > 0")


def shift_sigma(u: jax.Array, shift: float) -> jax.Array:
    """The Wan shift σ = s·u / (1 + (s−1)·u), elementwise (u in [0, 1])."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_sigmas(key: jax.Array, batch: int, cfg: FlowMatchingConfig) -> tuple[jax.Array, jax.Array]:
    """(σ (B,) fp32 in (0, 1], t (B,) int32 = trunc(1000·σ)) for one training batch (see module doc).

    The product is fp32 here (jit), so t can differ by one from `rl.schedule.timesteps`' float64 truncation when
    1000·σ lies within rounding of an integer; the DiT embeds t sinusoidally, where ±1 of 1000 is immaterial."""
    if cfg.time_sampling == "uniform":
        u = jax.random.uniform(key, (batch,))
    else:
        u = jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(key, (batch,)))
    n = cfg.num_train_timesteps
    # The scheduler's grid u ∈ {1/n, …, 1}: index = floor(u·n), grid value 1 − index/n (never 0: no clean input).
    idx = jnp.clip(jnp.floor(u * n), 0, n - 1)
    sigma = shift_sigma(1.0 - idx / n, cfg.shift).astype(jnp.float32)
    return sigma, jnp.trunc(sigma.astype(jnp.float32) * 1000.0).astype(jnp.int32)


def noisy_latents(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x0, ε (B, ...) and σ (B,) → (x_σ, target velocity ε − x0), both fp32."""
    s = sigma.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(jnp.float32)
    x0 = x0.astype(jnp.float32)
    noise = noise.astype(jnp.float32)
    return (1.0 - s) * x0 + s * noise, noise - x0


def flow_matching_loss(v_pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean loss, per-sample loss (B,)): mean squared velocity error in fp32."""
    err = jnp.square(v_pred.astype(jnp.float32) - target.astype(jnp.float32))
    per = jnp.mean(err.reshape(err.shape[0], -1), axis=-1)
    return jnp.mean(per), per


__all__ = ["FlowMatchingConfig", "TIME_SAMPLING", "flow_matching_loss", "noisy_latents", "sample_sigmas",
           "shift_sigma"]
