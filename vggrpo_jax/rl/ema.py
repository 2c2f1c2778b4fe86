"""Exponential moving average of the trainable parameters (Flow-GRPO's EMA of the LoRA weights).

At optimizer update number s (0-based, counted before the update is applied) the decay is
min((1 + s)/(10 + s), max_decay); the average is updated only when (s + 1) % every == 0:

    ema <- ema + (1 − decay)·(params − ema)

so it warms up quickly and then tracks with at most `max_decay` (Flow-GRPO on Wan: 0.9, every 8 updates).
The EMA weights are used for evaluation and checkpoints; they never feed back into training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    max_decay: float = 0.9
    every: int = 8

    def __post_init__(self):
        if not 0 <= self.max_decay < 1:
            raise ValueError(f"EmaConfig.max_decay must lie in [0, 1), got {self.max_decay}")
        if int(self.every) != self.every or self.every < 1:
            raise ValueError(f"EmaConfig.every must be a positive int, got {self.every}")


def ema_decay(step: jax.Array, max_decay: float) -> jax.Array:
    """float32 decay min((1 + s)/(10 + s), max_decay) at update number `step` (0-based)."""
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum((1.0 + s) / (10.0 + s), max_decay)


def ema_update(ema_params: Any, params: Any, step: jax.Array, config: EmaConfig) -> Any:
    """The EMA pytree after optimizer update number `step` (0-based); unchanged unless (step + 1) % every == 0.

    ema_params and params must have the same structure; the EMA keeps its own dtype (normally float32).
    """
    if jax.tree.structure(ema_params) != jax.tree.structure(params):
        raise ValueError("ema_update: ema_params and params have different pytree structures")
    active = (jnp.asarray(step, jnp.int32) + 1) % config.every == 0
    rate = 1.0 - ema_decay(step, config.max_decay)

    def one(e, p):
        upd = e.astype(jnp.float32) + rate * (p.astype(jnp.float32) - e.astype(jnp.float32))
        return jnp.where(active, upd.astype(e.dtype), e)

    return jax.tree.map(one, ema_params, params)
