"""Pinhole cameras: poses, intrinsics, projection and unprojection.

Conventions used everywhere in vggrpo_jax:
- Poses are camera-to-world (c2w) 4x4 matrices; the camera frame has OpenCV axes (x right, y down, z forward).
- Depth is z-depth in the camera frame unless a name says otherwise (``depth_along_ray`` is Euclidean distance).
- Pixel centres: the pixel in column ``u`` and row ``v`` (integer indices) has its centre at continuous image
  coordinates (u + 0.5, v + 0.5). A continuous projection (x, y) therefore falls into pixel (floor(x), floor(y)), and
  a camera with principal point (W/2, H/2) looks straight through the centre of the image.
- Intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] are in pixels of the map they project into.
"""
from __future__ import annotations

import jax.numpy as jnp

from vggrpo_jax.geometry.rotation import _check_last, safe_norm


def pose_from_rotation_translation(R: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Rotation (..., 3, 3) and translation (..., 3) -> homogeneous pose (..., 4, 4)."""
    _check_last(R, (3, 3), "R")
    _check_last(t, (3,), "t")
    batch = jnp.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    R = jnp.broadcast_to(R, batch + (3, 3))
    t = jnp.broadcast_to(t, batch + (3,))
    top = jnp.concatenate([R, t[..., None]], -1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], dtype=top.dtype), batch + (1, 4))
    return jnp.concatenate([top, bottom], -2)


def invert_pose(T: jnp.ndarray) -> jnp.ndarray:
    """Inverse of a rigid pose (..., 4, 4): c2w -> w2c and back. Uses R^T, so the rotation block must be orthonormal."""
    _check_last(T, (4, 4), "T")
    Rt = jnp.swapaxes(T[..., :3, :3], -1, -2)
    t = -(Rt @ T[..., :3, 3:4])[..., 0]
    return pose_from_rotation_translation(Rt, t)


def camera_centers(c2w: jnp.ndarray) -> jnp.ndarray:
    """Camera centres in world coordinates (..., 3) from c2w (..., 4, 4)."""
    _check_last(c2w, (4, 4), "c2w")
    return c2w[..., :3, 3]


def make_intrinsics(fx, fy, cx, cy) -> jnp.ndarray:
    """Scalars or arrays (...) -> K (..., 3, 3)."""
    fx, fy, cx, cy = jnp.broadcast_arrays(*(jnp.asarray(a, dtype=jnp.float32) for a in (fx, fy, cx, cy)))
    o, one = jnp.zeros_like(fx), jnp.ones_like(fx)
    return jnp.stack([jnp.stack([fx, o, cx], -1), jnp.stack([o, fy, cy], -1), jnp.stack([o, o, one], -1)], -2)


def scale_intrinsics(K: jnp.ndarray, scale: float) -> jnp.ndarray:
    """Intrinsics for a map resized by ``scale`` (same field of view). With the +0.5 pixel-centre convention the
    principal point scales exactly like the focal lengths."""
    _check_last(K, (3, 3), "K")
    return K * jnp.array([[scale, 1.0, scale], [1.0, scale, scale], [1.0, 1.0, 1.0]], dtype=K.dtype)


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> jnp.ndarray:
    """Pixel-centre coordinates (H, W, 2) as (x, y) = (u + 0.5, v + 0.5)."""
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=dtype) + 0.5, jnp.arange(width, dtype=dtype) + 0.5, indexing="ij")
    return jnp.stack([xs, ys], -1)


def pixel_rays(K: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """Camera-frame ray directions with z = 1 through every pixel centre: K (..., 3, 3) -> (..., H, W, 3)."""
    _check_last(K, (3, 3), "K")
    g = pixel_grid(height, width, K.dtype)
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (g[..., 0] - cx) / fx
    y = (g[..., 1] - cy) / fy
    return jnp.stack([x, y, jnp.ones_like(x)], -1)


def ray_depth_to_z(depth_along_ray: jnp.ndarray, rays: jnp.ndarray) -> jnp.ndarray:
    """Euclidean depth along each ray (..., H, W) and camera-frame ray directions (..., H, W, 3) -> z-depth (..., H, W).

    The rays are normalised here, so unit rays (Any4D) and z = 1 rays give the same answer.
    """
    _check_last(rays, (3,), "rays")
    if depth_along_ray.shape != rays.shape[:-1]:
        raise ValueError(
            f"depth_along_ray {tuple(depth_along_ray.shape)} must match rays {tuple(rays.shape)} minus the last axis"
        )
    return depth_along_ray * rays[..., 2] / jnp.maximum(safe_norm(rays), 1e-12)


def intrinsics_from_rays(rays: jnp.ndarray) -> jnp.ndarray:
    """Least-squares pinhole intrinsics from per-pixel camera-frame ray directions (..., H, W, 3) -> K (..., 3, 3).

    A pinhole maps ray (x, y, z) through pixel (u, v) as u + 0.5 = fx·x/z + cx and v + 0.5 = fy·y/z + cy (pixel
    centres at +0.5). These are two independent 1-D linear regressions, solved in closed form over all pixels whose
    ray points forward (z > 0). Rays need not be unit length.
    """
    _check_last(rays, (3,), "rays")
    if rays.ndim < 3:
        raise ValueError(f"rays must have shape (..., H, W, 3), got {tuple(rays.shape)}")
    H, W = rays.shape[-3], rays.shape[-2]
    g = pixel_grid(H, W, rays.dtype)
    z = rays[..., 2]
    fwd = z > 1e-6
    z_safe = jnp.where(fwd, z, 1.0)
    w = fwd.astype(rays.dtype)
    n = jnp.maximum(jnp.sum(w, (-2, -1)), 1.0)

    def fit(a, b):
        ma = jnp.sum(w * a, (-2, -1)) / n
        mb = jnp.sum(w * b, (-2, -1)) / n
        da = a - ma[..., None, None]
        cov = jnp.sum(w * da * (b - mb[..., None, None]), (-2, -1))
        var = jnp.sum(w * da * da, (-2, -1))
        f = cov / jnp.maximum(var, 1e-20)
        return f, mb - f * ma

    fx, cx = fit(rays[..., 0] / z_safe, g[..., 0])
    fy, cy = fit(rays[..., 1] / z_safe, g[..., 1])
    return make_intrinsics(fx, fy, cx, cy)


def world_to_camera(points: jnp.ndarray, c2w: jnp.ndarray) -> jnp.ndarray:
    """World points (..., 3) -> camera-frame points (..., 3). ``c2w`` (..., 4, 4) broadcasts against the points'
    leading dims (for point maps (N, H, W, 3) pass ``c2w[:, None, None]``)."""
    _check_last(points, (3,), "points")
    _check_last(c2w, (4, 4), "c2w")
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    # R^T (p − t), written without forming the inverse.
    return jnp.sum(jnp.swapaxes(R, -1, -2) * (points - t)[..., None, :], -1)


def camera_to_world(points_cam: jnp.ndarray, c2w: jnp.ndarray) -> jnp.ndarray:
    """Camera-frame points (..., 3) -> world points (..., 3); broadcasting as in ``world_to_camera``."""
    _check_last(points_cam, (3,), "points_cam")
    _check_last(c2w, (4, 4), "c2w")
    return jnp.sum(c2w[..., :3, :3] * points_cam[..., None, :], -1) + c2w[..., :3, 3]


def project(points: jnp.ndarray, c2w: jnp.ndarray, K: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Project world points (..., 3) into a camera -> (xy (..., 2) continuous pixel coordinates, z (...) z-depth).

    ``c2w`` (..., 4, 4) and ``K`` (..., 3, 3) broadcast against the points' leading dims. Pixel (u, v) spans
    [u, u+1) x [v, v+1), so ``floor(xy)`` is the pixel index. Points with z <= 0 get non-meaningful xy; callers mask
    them with ``z``.
    """
    _check_last(K, (3, 3), "K")
    pc = world_to_camera(points, c2w)
    z = pc[..., 2]
    z_safe = jnp.where(jnp.abs(z) > 1e-12, z, 1e-12)
    x = K[..., 0, 0] * pc[..., 0] / z_safe + K[..., 0, 2]
    y = K[..., 1, 1] * pc[..., 1] / z_safe + K[..., 1, 2]
    return jnp.stack([x, y], -1), z


def unproject_depth(depth: jnp.ndarray, c2w: jnp.ndarray, K: jnp.ndarray) -> jnp.ndarray:
    """z-depth maps (..., H, W) with cameras c2w (..., 4, 4), K (..., 3, 3) -> world points (..., H, W, 3)."""
    _check_last(c2w, (4, 4), "c2w")
    _check_last(K, (3, 3), "K")
    if depth.ndim < 2:
        raise ValueError(f"depth must have shape (..., H, W), got {tuple(depth.shape)}")
    H, W = depth.shape[-2:]
    rays = pixel_rays(K, H, W)
    return camera_to_world(rays * depth[..., None], c2w[..., None, None, :, :])
