"""Point-cloud z-buffer rendering by scatter-min."""
from __future__ import annotations

import jax.numpy as jnp

from vggrpo_jax.geometry.camera import project, scale_intrinsics
from vggrpo_jax.geometry.rotation import _check_last

# Points closer than this (in the camera's z) are treated as behind the camera.
MIN_DEPTH = 1e-6


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
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Render the z-depth of a point cloud seen by one pinhole camera.

    Args:
      points: (P, 3) world points.
      c2w: (4, 4) camera-to-world pose, OpenCV axes.
      intrinsics: (3, 3) K in pixels of a ``height`` x ``width`` image (pixel centres at +0.5).
      height, width: the image size K refers to (static).
      stride: render on a grid ``stride`` times coarser, shape (height // stride, width // stride); output pixel
        (i, j) covers input pixels [i·s, (i+1)·s) x [j·s, (j+1)·s). Use it with point maps subsampled by the same
        stride so the point density per output pixel stays about the same.
      point_mask: optional (P,) bool; False points are ignored (keeps shapes static under jit).
      min_depth: points with z <= min_depth (behind or on the camera plane) are dropped.

    Returns:
      depth (h, w): the smallest z of the points landing in each pixel (scatter-min: the nearest point wins), 0 where
        no point landed; valid (h, w) bool: whether any point landed.

    Points outside the image, behind the camera, non-finite, or masked out are dropped. Jittable; vmap over views.
    Differentiable with respect to the winning points' depth (the pixel assignment itself is piecewise constant).
    """
    _check_last(points, (3,), "points")
    if points.ndim != 2:
        raise ValueError(f"points must have shape (P, 3), got {tuple(points.shape)}")
    if c2w.shape != (4, 4):
        raise ValueError(f"c2w must have shape (4, 4), got {tuple(c2w.shape)} (vmap over views)")
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3), got {tuple(intrinsics.shape)} (vmap over views)")
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    h, w = height // stride, width // stride
    if h < 1 or w < 1:
        raise ValueError(f"stride {stride} leaves an empty image for {height}x{width}")
    if point_mask is not None and point_mask.shape != points.shape[:1]:
        raise ValueError(f"point_mask must have shape {points.shape[:1]}, got {tuple(point_mask.shape)}")

    K = scale_intrinsics(intrinsics, 1.0 / stride) if stride != 1 else intrinsics
    xy, z = project(points, c2w, K)
    ok = (z > min_depth) & jnp.all(jnp.isfinite(xy), -1) & jnp.isfinite(z)
    ok &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    if point_mask is not None:
        ok &= point_mask
    # Cast only finite, in-range coordinates: float->int of NaN/inf is undefined in XLA.
    xy = jnp.where(ok[:, None], xy, 0.0)
    idx = jnp.floor(xy[:, 1]).astype(jnp.int32) * w + jnp.floor(xy[:, 0]).astype(jnp.int32)
    idx = jnp.where(ok, idx, h * w)  # out of bounds -> dropped by the scatter
    zz = jnp.where(ok, z, jnp.inf)
    buf = jnp.full((h * w,), jnp.inf, dtype=z.dtype).at[idx].min(zz, mode="drop")
    valid = jnp.isfinite(buf)
    depth = jnp.where(valid, buf, 0.0)
    return depth.reshape(h, w), valid.reshape(h, w)
