"""The one summary of a batch of rewards, shared by the GRPO trainer's per-iteration metrics (inside jit) and the
GRPO evaluator's eval/* metrics (on host arrays).

A reward may be non-finite by definition (r_geo = −inf when a view has no valid pixel), so the statistics are taken
over the finite entries and the non-finite fraction is reported beside them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def finite_stats(x: Any, empty: float = float("nan")) -> dict[str, Any]:
    """x (any shape) → {"mean", "std", "nonfinite_frac"}: mean and (population) std over the finite entries (both
    `empty` when there is none), and the fraction of entries that are NaN or ±inf.

    A NumPy array is summarised with NumPy in float64 (host metrics); anything else (a jax.Array, also a tracer
    under jit) with jax.numpy in its own dtype.
    """
    xp = np if isinstance(x, np.ndarray) else jnp
    x = xp.asarray(x, np.float64) if xp is np else xp.asarray(x)
    finite = xp.isfinite(x)
    count = xp.sum(finite)
    n = xp.maximum(count, 1)
    mean = xp.sum(xp.where(finite, x, 0.0)) / n
    std = xp.sqrt(xp.sum(xp.where(finite, (x - mean) ** 2, 0.0)) / n)
    none = count == 0
    return {"mean": xp.where(none, empty, mean), "std": xp.where(none, empty, std),
            "nonfinite_frac": 1.0 - xp.mean(finite)}


__all__ = ["finite_stats"]
