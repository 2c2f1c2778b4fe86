"""Wan's 3D rotary position embedding (fp32, tables built on the host at trace time).

The head dim is split into time / height / width parts, h = w = 2·(head_dim // 6) and t = head_dim − h − w (44/42/42
for 128). Each part rotates interleaved pairs (x[2i], x[2i+1]) by angle pos · theta^(−2i/part) for the token's frame,
row or column index. Tokens are in (F', H', W') row-major order, as the patch embedding flattens them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) sizes of the head-dim parts."""
    h = w = 2 * (head_dim // 6)
    return head_dim - h - w, h, w


def rope_tables(
    grid: tuple[int, int, int], head_dim: int, max_seq_len: int = 1024, theta: float = 10000.0
) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (F'·H'·W', head_dim // 2), float32, for a token grid (F', H', W').

    One entry per rotated pair. The per-axis angles are computed in float64 on the host and rounded once (as
    diffusers does); only those three small tables become constants, the (L, D/2) tables are broadcast in-graph.
    Raises ValueError when an axis is longer than the table (`max_seq_len`).
    """
    if max(grid) > max_seq_len:
        raise ValueError(f"token grid {tuple(grid)} exceeds rope_max_seq_len={max_seq_len}")
    f, h, w = grid
    angles = []
    for n, d in zip(grid, rope_split(head_dim)):
        inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        angles.append(np.outer(np.arange(n, dtype=np.float64), inv))
    tables = []
    for fn in (np.cos, np.sin):
        a, b, c = (jnp.asarray(fn(x).astype(np.float32)) for x in angles)
        full = jnp.concatenate(
            [
                jnp.broadcast_to(a[:, None, None], (f, h, w, a.shape[-1])),
                jnp.broadcast_to(b[None, :, None], (f, h, w, b.shape[-1])),
                jnp.broadcast_to(c[None, None, :], (f, h, w, c.shape[-1])),
            ],
            axis=-1,
        )
        tables.append(full.reshape(f * h * w, head_dim // 2))
    return tables[0], tables[1]


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved pairs of x (B, L, H, D) by the (L, D/2) tables, in fp32; returns x's dtype."""
    b, l, h, d = x.shape
    xf = x.astype(jnp.float32).reshape(b, l, h, d // 2, 2)
    x1, x2 = xf[..., 0], xf[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    return out.reshape(b, l, h, d).astype(x.dtype)
