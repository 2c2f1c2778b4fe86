"""Flow-matching SDE/ODE steps with Gaussian transition log-probabilities (all math in float32).

Conventions: x_σ = (1−σ)·x0 + σ·ε, the model predicts the velocity v ≈ ε − x0 (after CFG). A step goes from σ to
σ_next < σ; Δ = σ_next − σ < 0, h = −Δ. With the score ∇log p(x_σ) = −(x + (1−σ)·v)/σ, the reverse SDE that keeps
the marginals of the probability-flow ODE, discretised by Euler–Maruyama, is

    μ     = x + Δ·[ v + g²/(2σ)·(x + (1−σ)·v) ]
    x'    = μ + g·sqrt(h)·ε,          ε ~ N(0, I)
    log p(x'|x) = mean over non-batch elements of  −(x' − μ)²/(2 g² h) − log(g·sqrt(h)) − ½·log(2π)

and the deterministic step is x' = x + Δ·v. The noise coefficient g(σ) is a `NoiseRule`.

Arrays: x, v are (B, ...) of any rank ≥ 1; sigma/sigma_next are scalars or (B,) (one value per sample).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NOISE_RULES = ("flow_grpo_wan", "sd3", "constant")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class NoiseRule:
    """How the SDE noise coefficient g depends on σ. Hashable, so it can be a static argument of jit.

    kind:
      "flow_grpo_wan"  g = scale·σ                       (Flow-GRPO's Wan script; scale = σ_max_noise = sigmas[1])
      "sd3"            g = scale·sqrt(σ / (1 − min(σ, sigma_cap)))   (Flow-GRPO SD3 rule; scale = a ≈ 0.7)
      "constant"       g = scale                          (DanceGRPO; scale = η, 0.3 for Wan)
    sigma_cap: only for "sd3". Flow-GRPO replaces σ = 1 by sigmas[1] in the denominator; Wan's first sigma is 0.9997,
      not 1, where the uncapped rule gives g ≈ 40 and an unstable first step, so the cap (= sigmas[1]) is applied to
      every σ above it. It changes nothing for σ ≤ sigmas[1], and equals Flow-GRPO's rule on schedules starting at 1.
    """

    kind: str
    scale: float
    sigma_cap: float = 1.0

    def __post_init__(self):
        if self.kind not in NOISE_RULES:
            raise ValueError(f"NoiseRule.kind must be one of {NOISE_RULES}, got {self.kind!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"NoiseRule.scale must be a positive finite float, got {self.scale!r}")
        if self.kind == "sd3" and not (0 < self.sigma_cap < 1):
            raise ValueError(f"NoiseRule(sd3).sigma_cap must lie in (0, 1), got {self.sigma_cap!r}")


def make_noise_rule(kind: str, sigmas: Any, scale: float | None = None) -> NoiseRule:
    """The noise rule `kind` with the reference defaults filled in from the schedule `sigmas` (N+1,).

    Defaults: flow_grpo_wan scale = sigmas[1]; sd3 scale = 0.7 with sigma_cap = sigmas[1]; constant scale = 0.3.
    """
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] < 3:
        raise ValueError(f"make_noise_rule: sigmas must be 1-D with at least 3 entries, got shape {s.shape}")
    if kind == "flow_grpo_wan":
        return NoiseRule(kind, float(s[1]) if scale is None else float(scale))
    if kind == "sd3":
        return NoiseRule(kind, 0.7 if scale is None else float(scale), sigma_cap=float(s[1]))
    if kind == "constant":
        return NoiseRule(kind, 0.3 if scale is None else float(scale))
    raise ValueError(f"make_noise_rule: unknown kind {kind!r}; choose one of {NOISE_RULES}")


def noise_level(rule: NoiseRule, sigma: jax.Array) -> jax.Array:
    """g(σ) in float32, same shape as `sigma`."""
    sigma = jnp.asarray(sigma, jnp.float32)
    if rule.kind == "flow_grpo_wan":
        return rule.scale * sigma
    if rule.kind == "sd3":
        return rule.scale * jnp.sqrt(sigma / (1.0 - jnp.minimum(sigma, rule.sigma_cap)))
    return jnp.full_like(sigma, rule.scale)


def _per_sample(s: jax.Array, x: jax.Array) -> jax.Array:
    """Scalar stays scalar; a (B,) array becomes (B, 1, ..., 1) to broadcast against x (B, ...)."""
    s = jnp.asarray(s, jnp.float32)
    if s.ndim == 0:
        return s
    if s.shape != x.shape[:1]:
        raise ValueError(f"sigma must be a scalar or have shape (B,) = {x.shape[:1]}, got {s.shape}")
    return s.reshape(s.shape + (1,) * (x.ndim - 1))


def _check_xv(x: jax.Array, v: jax.Array) -> None:
    if x.shape != v.shape:
        raise ValueError(f"latent x {x.shape} and velocity v {v.shape} must have the same shape")
    if x.ndim < 1:
        raise ValueError("latent x must have a leading batch dimension")


def sde_step_mean_std(
    x: jax.Array, v: jax.Array, sigma: jax.Array, sigma_next: jax.Array, rule: NoiseRule
) -> tuple[jax.Array, jax.Array]:
    """Mean μ (B, ...) and standard deviation g·sqrt(h) (scalar or (B, 1, ...)) of p(x_next | x). float32."""
    _check_xv(x, v)
    x = x.astype(jnp.float32)
    v = v.astype(jnp.float32)
    s = _per_sample(sigma, x)
    s_next = _per_sample(sigma_next, x)
    delta = s_next - s
    g = noise_level(rule, s)
    mean = x + delta * (v + g * g / (2.0 * s) * (x + (1.0 - s) * v))
    std = g * jnp.sqrt(-delta)
    return mean, std


def log_prob(x_next: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """(B,) float32 Gaussian log-density of x_next under N(mean, std²), MEAN over all non-batch elements.

    x_next is a sample, i.e. a constant: no gradient flows into it (only into mean, and std if it depends on θ).
    """
    x_next = jax.lax.stop_gradient(jnp.asarray(x_next, jnp.float32))
    if x_next.shape != mean.shape:
        raise ValueError(f"log_prob: x_next {x_next.shape} and mean {mean.shape} must have the same shape")
    std = jnp.asarray(std, jnp.float32)
    elem = -((x_next - mean) ** 2) / (2.0 * std * std) - jnp.log(std) - _HALF_LOG_2PI
    return jnp.mean(elem.reshape(elem.shape[0], -1), axis=1)


def sde_step(
    x: jax.Array, v: jax.Array, sigma: jax.Array, sigma_next: jax.Array, rule: NoiseRule, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One stochastic step: (x_next (B, ...) float32, log p(x_next | x) (B,) float32). Noise is i.i.d. per element."""
    mean, std = sde_step_mean_std(x, v, sigma, sigma_next, rule)
    noise = jax.random.normal(key, mean.shape, jnp.float32)
    x_next = mean + std * noise
    return x_next, log_prob(x_next, mean, std)


def ode_step(x: jax.Array, v: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """Deterministic Euler step of the probability-flow ODE: x + (σ_next − σ)·v, float32."""
    _check_xv(x, v)
    x = x.astype(jnp.float32)
    return x + (_per_sample(sigma_next, x) - _per_sample(sigma, x)) * v.astype(jnp.float32)


def gaussian_kl_same_std(mean_p: jax.Array, mean_q: jax.Array, std: jax.Array) -> jax.Array:
    """(B,) KL(N(mean_p, std²) ‖ N(mean_q, std²)) averaged over non-batch elements: mean (μp − μq)² / (2 std²)."""
    std = jnp.asarray(std, jnp.float32)
    elem = (mean_p.astype(jnp.float32) - mean_q.astype(jnp.float32)) ** 2 / (2.0 * std * std)
    return jnp.mean(elem.reshape(elem.shape[0], -1), axis=1)
