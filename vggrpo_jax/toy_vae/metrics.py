"""Reconstruction metrics on videos (B, C, F, H, W) in [−1, 1]: PSNR and SSIM per clip (peak-to-peak 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """(B,) PSNR in dB of each clip: 10·log10(2² / MSE) over all its pixels (= PSNR of the [0, 1] images)."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
    g = jnp.exp(-0.5 * ((jnp.arange(size) - (size - 1) / 2) / sigma) ** 2)
    return g / g.sum()


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
    """(B,) mean SSIM of each clip (Wang et al. 2004: 11-px Gaussian window σ 1.5, K1 0.01, K2 0.03, valid region),
    per frame and channel on the [0, 1] images, averaged."""
    x = (x.astype(jnp.float32) + 1) / 2
    y = (y.astype(jnp.float32) + 1) / 2
    b = x.shape[0]
    to_images = lambda v: v.reshape(-1, 1, *v.shape[-2:])  # (B·C·F, 1, H, W)
    x, y = to_images(x), to_images(y)
    g = _gaussian_window()
    k = jnp.outer(g, g)[None, None]

    def blur(v):
        return jax.lax.conv_general_dilated(v, k, (1, 1), "VALID", precision=jax.lax.Precision.HIGHEST)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.reshape(b, -1).mean(-1)
