"""The Wan flow-matching sigma schedule and the integer timesteps the DiT is conditioned on.

Convention (see docs of rl/): x_σ = (1−σ)·x0 + σ·ε, sigmas decrease from σ_0 ≈ 1 to σ_N = 0; step i goes from
sigmas[i] to sigmas[i+1].
"""

from __future__ import annotations

from typing import Any

import numpy as np


def wan_sigmas(num_steps: int, shift: float = 3.0, dtype: Any = np.float32) -> np.ndarray:
    """(num_steps + 1,) sigmas of Wan's shifted schedule, decreasing, last entry exactly 0.

    raw = linspace(0, 0.999, N+1); σ' = s·raw / (1 + (s−1)·raw); reversed; the trailing σ'(raw=0) = 0 is dropped
    (it is not a step start) and an exact 0 is appended as the end of the last step. Computed in float64, returned
    in `dtype`: float32 for the SDE math; float64 where the integer timesteps are derived (see `timesteps`).
    """
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"wan_sigmas: num_steps must be a positive int, got {num_steps!r}")
    if not shift > 0:
        raise ValueError(f"wan_sigmas: shift must be > 0, got {shift!r}")
    raw = np.linspace(0.0, 0.999, num_steps + 1, dtype=np.float64)
    shifted = shift * raw / (1.0 + (shift - 1.0) * raw)
    starts = shifted[::-1][:-1]
    return np.concatenate([starts, [0.0]]).astype(dtype)


def timesteps(sigmas: np.ndarray) -> np.ndarray:
    """int32 timesteps int(σ·1000) (truncated toward zero) for each given sigma, the product taken in float64.

    Pass sigmas[:-1] to get the (N,) timesteps of the N steps. diffusers and Flow-GRPO truncate the float64 σ·1000
    of the float64 schedule: pass the float64 schedule (`wan_sigmas(N, shift, np.float64)`, or `wan_timesteps`) to
    match them exactly. A float32 sigma can sit one ulp below an integer the float64 one reaches (shift 1, N = 21)
    and its timestep is then one lower.
    """
    s = np.asarray(sigmas)
    if s.ndim != 1:
        raise ValueError(f"timesteps: sigmas must be 1-D, got shape {s.shape}")
    if np.any(s < 0) or np.any(s > 1):
        raise ValueError(f"timesteps: sigmas must lie in [0, 1], got range [{s.min()}, {s.max()}]")
    return np.trunc(s.astype(np.float64) * 1000.0).astype(np.int32)


def wan_timesteps(num_steps: int, shift: float = 3.0) -> np.ndarray:
    """(num_steps,) int32 timesteps of Wan's schedule: int(σ·1000) of the float64 sigmas, as diffusers computes."""
    return timesteps(wan_sigmas(num_steps, shift, np.float64)[:-1])


def check_sigmas(sigmas: np.ndarray) -> None:
    """Raises ValueError unless `sigmas` is a 1-D schedule with ≥ 2 entries, strictly decreasing, within [0, 1]."""
    s = np.asarray(sigmas)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries (N steps need N+1), got shape {s.shape}")
    if not np.all(np.diff(s) < 0):
        raise ValueError(f"sigmas must be strictly decreasing, got {s}")
    if s[0] > 1 or s[-1] < 0:
        raise ValueError(f"sigmas must lie in [0, 1], got first {s[0]} last {s[-1]}")
