"""Group-relative advantages (GRPO): per-prompt standardisation of each reward, then a weighted mean."""
from __future__ import annotations

from typing import Mapping, Optional

import jax.numpy as jnp


def standardize_groups(r: jnp.ndarray, eps: float = 1e-4) -> jnp.ndarray:
    """(..., P, K) -> (r − μ)/(σ + eps) per group (last axis), population std over the group's finite entries.

    A zero-variance group gives 0. Non-finite rewards (a failed sample) are left out of μ and σ and come back as
    -inf, to be clipped to the most negative advantage by ``group_advantages`` — unless the whole group failed:
    then no sample is worse than another and every z is 0 (a constant shift would still push the policy).
    """
    ok = jnp.isfinite(r)
    n = jnp.maximum(jnp.sum(ok, -1, keepdims=True), 1)
    r0 = jnp.where(ok, r, 0.0)
    mu = jnp.sum(r0, -1, keepdims=True) / n
    var = jnp.sum(jnp.where(ok, (r0 - mu) ** 2, 0.0), -1, keepdims=True) / n
    z = (r0 - mu) / (jnp.sqrt(var) + eps)
    any_ok = jnp.any(ok, -1, keepdims=True)
    return jnp.where(ok, z, jnp.where(any_ok, -jnp.inf, 0.0))


def group_advantages(
    rewards: Mapping[str, jnp.ndarray],
    weights: Optional[Mapping[str, float]] = None,
    clip: float = 5.0,
    eps: float = 1e-4,
) -> jnp.ndarray:
    """Advantages A (..., P, K) for P prompts with K samples each.

    Each reward (..., P, K) is standardised within its prompt group, (r − μ)/(σ + eps) with the population std; the
    standardised rewards are averaged with ``weights`` (equal by default, normalised to sum 1), then clipped to
    [−clip, clip]. With rewards {motion, geo} and equal weights this is the paper's
    A = ½((r_motion − μ)/σ + (r_geo − μ)/σ). A non-finite reward makes that sample's term −clip (worst in group).
    """
    if not rewards:
        raise ValueError("group_advantages needs at least one reward")
    names = list(rewards)
    shapes = {k: tuple(jnp.shape(v)) for k, v in rewards.items()}
    shape = shapes[names[0]]
    if len(shape) < 2:
        raise ValueError(f"rewards must have shape (..., P, K), got {shapes}")
    if any(s != shape for s in shapes.values()):
        raise ValueError(f"all rewards must have the same shape (..., P, K), got {shapes}")
    if weights is None:
        weights = {k: 1.0 for k in names}
    if set(weights) != set(names):
        raise ValueError(f"weights keys {sorted(weights)} must match reward keys {sorted(names)}")
    total = float(sum(float(w) for w in weights.values()))
    if not total > 0 or any(float(w) < 0 for w in weights.values()):
        raise ValueError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    acc = 0.0
    for k in names:
        z = standardize_groups(jnp.asarray(rewards[k], jnp.float32), eps)
        z = jnp.where(jnp.isfinite(z), z, -clip)
        acc = acc + (float(weights[k]) / total) * z
    return jnp.clip(acc, -clip, clip)
