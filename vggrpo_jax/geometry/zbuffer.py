"""Point-cloud z-buffer rendering: the nearest point landing in each pixel wins.

Two interchangeable reductions of the same projected points (``method``), equal to the last bit on the depth they
return (both take the minimum of the same float32 depths per pixel):

- "scatter": a scatter-min into the pixel buffer. One pass over the points; fastest where scatters are cheap (CPU,
  GPU atomics).
- "sort": no scatter. The points are sorted by (pixel, depth) with ``lax.sort``; each pixel then reads the first
  point of its run, located by binary search (``searchsorted``: gathers only). O(P log P), built from the sort and
  gather primitives that TPUs run well, where a scatter's updates are serialised.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from vggrpo_jax.geometry.camera import scale_intrinsics

# Points closer than this (in the camera's z) are treated as behind the camera.
MIN_DEPTH = 1e-6
ZBUFFER_METHODS = ("scatter", "sort")
ZBufferMethod = Literal["scatter", "sort"]


def check_zbuffer_method(method: str) -> None:
    if method not in ZBUFFER_METHODS:
        raise ValueError(f"zbuffer must be one of {ZBUFFER_METHODS}, got {method!r}")


def pixel_indices(
    points_t: jnp.ndarray,
    c2w: jnp.ndarray,
    intrinsics: jnp.ndarray,
    h: int,
    w: int,
    *,
    point_mask: jnp.ndarray | None = None,
    min_depth: float = MIN_DEPTH,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Flat pixel index and z-depth of each point: points_t (3, P) -> idx (P,) int32 in [0, h·w], z (P,).

    ``intrinsics`` (3, 3) is K of the h x w grid. Dropped points (behind the camera, outside, non-finite, masked out)
    get idx = h·w (one past the last pixel); their z is left as computed and must be ignored.
    """
    # One 3x4 projection P = K [R^T | -R^T t] applied coordinate by coordinate on (3, P) planes: two fused
    # elementwise loops over the points (idx and z), only idx's doing the divisions. A (P, 3) x (3, 3) dot, or
    # strided reads of (P, 3) points, cost several times more on CPU.
    R, t = c2w[:3, :3], c2w[:3, 3]
    M = intrinsics @ R.T
    m = -(M @ t)
    px, py, pz = points_t[0], points_t[1], points_t[2]
    uh, vh, z = (M[r, 0] * px + M[r, 1] * py + M[r, 2] * pz + m[r] for r in range(3))
    ok = (z > min_depth) & jnp.isfinite(z)
    if point_mask is not None:
        ok &= point_mask
    z_safe = jnp.where(ok, z, 1.0)
    u, v = uh / z_safe, vh / z_safe
    # NaN/inf coordinates fail these comparisons, so non-finite points are dropped here too.
    ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
    # Cast only finite, in-range coordinates: float->int of NaN/inf is undefined in XLA.
    u = jnp.where(ok, u, 0.0)
    v = jnp.where(ok, v, 0.0)
    idx = jnp.floor(v).astype(jnp.int32) * w + jnp.floor(u).astype(jnp.int32)
    return jnp.where(ok, idx, h * w), z


def zbuffer_min(idx: jnp.ndarray, z: jnp.ndarray, size: int, method: ZBufferMethod = "scatter") -> jnp.ndarray:
    """Per-pixel minimum of z: idx (P,) int32 in [0, size] (size = dropped, its z ignored), z (P,) -> (size,), +inf
    where no point landed. "scatter" and "sort" return the same values."""
    check_zbuffer_method(method)
    if method == "scatter":
        return jnp.full((size,), jnp.inf, dtype=z.dtype).at[idx].min(z, mode="drop")
    # Sorted by pixel, then depth: each pixel's run starts with its nearest point.
    s_idx, s_z = jax.lax.sort((idx, z), num_keys=2)
    pixels = jnp.arange(size, dtype=idx.dtype)
    first = jnp.minimum(jnp.searchsorted(s_idx, pixels, side="left"), idx.shape[0] - 1)
    return jnp.where(s_idx[first] == pixels, s_z[first], jnp.inf)


def render_depth(
    points: jnp.ndarray,
    c2w: jnp.ndarray,
    intrinsics: jnp.ndarray,
    height: int,
    width: int,
    stride: int = 1,
    *,
    point_mask: jnp.ndarray | None = None,
    min_depth: float = MIN_DEPTH,
    method: ZBufferMethod = "scatter",
    transposed: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Render the z-depth of a point cloud seen by one pinhole camera.

    Args:
      points: (P, 3) world points; (3, P) with ``transposed`` (the layout the projection reads; pass it when
        rendering the same points into many views, so the transpose is done once).
      c2w: (4, 4) camera-to-world pose, OpenCV axes.
      intrinsics: (3, 3) K in pixels of a ``height`` x ``width`` image (pixel centres at +0.5).
      height, width: the image size K refers to (static).
      stride: render on a grid ``stride`` times coarser, shape (height // stride, width // stride); output pixel
        (i, j) covers input pixels [i·s, (i+1)·s) x [j·s, (j+1)·s). Use it with point maps subsampled by the same
        stride so the point density per output pixel stays about the same.
      point_mask: optional (P,) bool; False points are ignored (keeps shapes static under jit).
      min_depth: points with z <= min_depth (behind or on the camera plane) are dropped.
      method: the z-buffer reduction, "scatter" (scatter-min) or "sort" (no scatter); see the module docstring.
        Both return the same depth exactly.

    Returns:
      depth (h, w): the smallest z of the points landing in each pixel (the nearest point wins), 0 where no point
        landed; valid (h, w) bool: whether any point landed.

    Points outside the image, behind the camera, non-finite, or masked out are dropped. Jittable; vmap over views.
    Differentiable with respect to the winning points' depth (the pixel assignment itself is piecewise constant).
    """
    if points.ndim != 2 or points.shape[0 if transposed else 1] != 3:
        raise ValueError(f"points must have shape {'(3, P)' if transposed else '(P, 3)'}, got {tuple(points.shape)}")
    points_t = points if transposed else points.T
    if c2w.shape != (4, 4):
        raise ValueError(f"c2w must have shape (4, 4), got {tuple(c2w.shape)} (vmap over views)")
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3), got {tuple(intrinsics.shape)} (vmap over views)")
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    check_zbuffer_method(method)
    h, w = height // stride, width // stride
    if h < 1 or w < 1:
        raise ValueError(f"stride {stride} leaves an empty image for {height}x{width}")
    if point_mask is not None and point_mask.shape != points_t.shape[1:]:
        raise ValueError(f"point_mask must have shape {points_t.shape[1:]}, got {tuple(point_mask.shape)}")

    K = scale_intrinsics(intrinsics, 1.0 / stride) if stride != 1 else intrinsics
    idx, z = pixel_indices(points_t, c2w, K, h, w, point_mask=point_mask, min_depth=min_depth)
    buf = zbuffer_min(idx, z, h * w, method)
    valid = jnp.isfinite(buf)
    depth = jnp.where(valid, buf, 0.0)
    return depth.reshape(h, w), valid.reshape(h, w)
