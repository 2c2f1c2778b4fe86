"""Separable resampling written as small static matrices, matching PyTorch's F.interpolate exactly.

Both resamplers are linear and separable, so a 2-D resize is out = Ry · x · Rxᵀ with Ry (out_h, in_h) and
Rx (out_w, in_w) built in numpy at trace time (shapes are static). This is exact (no approximation beyond fp32
rounding) and lowers to two small matmuls.

- `bicubic_matrix`: mode="bicubic", align_corners=False, antialias=False, with an explicit `scale_factor` (the
  coordinate map uses the given scale, not in/out; DINOv2 passes (n + 0.1)/M). Cubic convolution a = −0.75, taps
  clamped at the border (PyTorch's bounded access).
- `bilinear_matrix`: mode="bilinear", align_corners=True (src = dst·(in−1)/(out−1)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75  # PyTorch's cubic convolution coefficient


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The 4 tap weights for fractional offsets t (...,) → (..., 4), taps at floor−1 .. floor+2."""

    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)


def bicubic_matrix(in_size: int, out_size: int, scale_factor: float) -> np.ndarray:
    """(out_size, in_size) matrix of PyTorch bicubic resampling with coordinate scale 1/scale_factor."""
    scale = 1.0 / scale_factor
    dst = np.arange(out_size, dtype=np.float64)
    src = scale * (dst + 0.5) - 0.5
    base = np.floor(src)
    w = _cubic_weights(src - base)
    m = np.zeros((out_size, in_size), np.float64)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), w[:, k])
    return m


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of bilinear resampling with align_corners=True."""
    m = np.zeros((out_size, in_size), np.float64)
    if out_size == 1 or in_size == 1:
        m[:, 0] = 1.0
        return m
    src = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    lo = np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def resize_hw(x: jax.Array, ry: np.ndarray, rx: np.ndarray) -> jax.Array:
    """Applies row matrix ry (H', H) and column matrix rx (W', W) to x (..., H, W, C) channels-last."""
    ry = jnp.asarray(ry, x.dtype)
    rx = jnp.asarray(rx, x.dtype)
    x = jnp.einsum("oh,...hwc->...owc", ry, x)
    return jnp.einsum("pw,...owc->...opc", rx, x)


def resize_bilinear(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Bilinear align_corners=True resize of x (..., H, W, C) to out_hw."""
    h, w = x.shape[-3], x.shape[-2]
    return resize_hw(x, bilinear_matrix(h, out_hw[0]), bilinear_matrix(w, out_hw[1]))


def interpolate_pos_grid(grid: jax.Array, out_hw: tuple[int, int], offset: float = 0.1) -> jax.Array:
    """DINOv2's position-table resampling: grid (M, M, D) → (h, w, D) bicubic with scale (n + offset)/M."""
    m = grid.shape[0]
    h, w = out_hw
    if math.floor(m * (h + offset) / m) != h or math.floor(m * (w + offset) / m) != w:
        raise ValueError(f"cannot resample a {m}x{m} table to {out_hw}")
    ry = bicubic_matrix(m, h, (h + offset) / m)
    rx = bicubic_matrix(m, w, (w + offset) / m)
    return resize_hw(grid, ry, rx)
