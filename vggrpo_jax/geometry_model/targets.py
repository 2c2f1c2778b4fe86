"""Exact supervision for a geometry model from a toyworld clip, in Any4D's output conventions.

A training example is N views picked from one clip (frames f_0 < f_1 < … or reversed). Any4D predicts everything in
the frame of view 0 (its "world"), so the ground truth is re-expressed there:

    c2w_k      = inv(C_{f_0}) · C_{f_k}                            camera-to-view-0, OpenCV axes
    rays       unit camera-frame directions through each pixel centre (defined on sky too)
    depth      Euclidean distance along the ray (Any4D's depth_along_ray); 0 on sky
    depth_z    z-depth; 0 on sky
    points     view-0-frame surface points (0 on sky)
    flow[k]    on view 0's pixel grid: the displacement of view 0's points from time f_0 to time f_k, in view 0's
               frame (toyworld objects move at constant velocity, so flow[k] = R_0ᵀ · vel(f_0) · (f_k − f_0))
    valid      pixels that hit a surface (the complement is sky: Any4D's ambiguous pixels)

The inputs are the raw per-frame arrays a `GeometryCache` stores; `make_targets` is jittable and batched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from vggrpo_jax.geometry.camera import camera_to_world, invert_pose, pixel_rays


@struct.dataclass
class GeometryTargets:
    """Batched targets (B clips, N views, H×W maps), fp32. See the module doc for each field's convention.

    images (B, N, 3, H, W) in [0, 1]; c2w (B, N, 4, 4); intrinsics (B, 3, 3); rays (B, N, H, W, 3) unit;
    depth (B, N, H, W) along the ray; depth_z (B, N, H, W); points (B, N, H, W, 3); flow (B, N, H, W, 3);
    valid (B, N, H, W) bool; dynamic (B, H, W) bool (view 0's pixels on a moving object).
    """

    images: jax.Array
    c2w: jax.Array
    intrinsics: jax.Array
    rays: jax.Array
    depth: jax.Array
    depth_z: jax.Array
    points: jax.Array
    flow: jax.Array
    valid: jax.Array
    dynamic: jax.Array


def make_targets(video: jax.Array, depth_z: jax.Array, velocity0: jax.Array, c2w: jax.Array, intrinsics: jax.Array,
                 frame_offsets: jax.Array) -> GeometryTargets:
    """Targets for B examples of N views.

    Args:
      video: (B, N, H, W, 3) uint8 or float in [0, 1], the N picked frames.
      depth_z: (B, N, H, W) z-depth of the picked frames (0 on sky).
      velocity0: (B, H, W, 3) world-frame per-frame velocity of the surface seen at each pixel of view 0.
      c2w: (B, N, 4, 4) world camera-to-world poses of the picked frames.
      intrinsics: (B, 3, 3) pinhole K of the H×W maps (the same for every frame).
      frame_offsets: (B, N) f_k − f_0 in frames (negative when the views run backwards in time).
    """
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"make_targets: video must be (B, N, H, W, 3), got {tuple(video.shape)}")
    b, n, h, w, _ = video.shape
    if depth_z.shape != (b, n, h, w) or velocity0.shape != (b, h, w, 3) or c2w.shape != (b, n, 4, 4):
        raise ValueError(f"make_targets: depth {depth_z.shape}, velocity0 {velocity0.shape}, c2w {c2w.shape} do not "
                         f"match video {video.shape}")
    images = video.astype(jnp.float32)
    if jnp.issubdtype(video.dtype, jnp.integer):
        images = images / 255.0
    images = jnp.moveaxis(images, -1, 2)
    depth_z = depth_z.astype(jnp.float32)
    rel = invert_pose(c2w[:, :1]) @ c2w  # (B, N, 4, 4) camera k → view 0's camera
    rays_z1 = pixel_rays(intrinsics, h, w)  # (B, H, W, 3) with z = 1
    ray_len = jnp.linalg.norm(rays_z1, axis=-1)
    rays = rays_z1 / ray_len[..., None]
    valid = depth_z > 0
    pts_cam = rays_z1[:, None] * depth_z[..., None]
    points = camera_to_world(pts_cam, rel[:, :, None, None]) * valid[..., None]
    r0t = jnp.swapaxes(c2w[:, 0, :3, :3], -1, -2)  # world → view 0
    vel = jnp.einsum("bij,bhwj->bhwi", r0t, velocity0.astype(jnp.float32)) * valid[:, 0, ..., None]
    flow = vel[:, None] * frame_offsets.astype(jnp.float32)[:, :, None, None, None]
    dynamic = jnp.linalg.norm(velocity0, axis=-1) > 0
    return GeometryTargets(
        images=images, c2w=rel, intrinsics=intrinsics.astype(jnp.float32),
        rays=jnp.broadcast_to(rays[:, None], (b, n, h, w, 3)), depth=depth_z * ray_len[:, None], depth_z=depth_z,
        points=points, flow=flow, valid=valid, dynamic=dynamic & valid[:, 0],
    )


def mirror(tgt: GeometryTargets, flip: jax.Array) -> GeometryTargets:
    """Mirror left–right the examples where `flip` (B,) bool is set: the same scene seen in a mirror, a new clip with
    exact ground truth (an augmentation that multiplies the distinct camera paths the model sees).

    Mirroring the image (u → W − 1 − u) is the reflection S = diag(−1, 1, 1) of camera space; applied to every
    frame and to view 0's frame alike it maps each vector field v to S·v (rays, points, flow), each rotation R to
    S·R·S (still a rotation: det(S)² = 1) and each translation t to S·t, and leaves depths unchanged. The principal
    point moves to W − c_x (toyworld's is centred, so K is unchanged there)."""
    b = tgt.images.shape[0]
    if flip.shape != (b,):
        raise ValueError(f"mirror: flip must be ({b},), got {tuple(flip.shape)}")
    s = jnp.asarray([-1.0, 1.0, 1.0], jnp.float32)
    w = tgt.images.shape[-1]

    def pick(new, old):
        return jnp.where(flip.reshape((b,) + (1,) * (old.ndim - 1)), new, old)

    def maps(x, axis):  # a scalar map (B, …, W at `axis`, …)
        return pick(jnp.flip(x, axis), x)

    def vectors(x):  # (B, N, H, W, 3)
        return pick(jnp.flip(x, 3) * s, x)

    c2w0 = jnp.asarray(tgt.c2w)
    rot = c2w0[..., :3, :3] * s[:, None] * s[None, :]
    trans = c2w0[..., :3, 3] * s
    c2w = c2w0.at[..., :3, :3].set(rot).at[..., :3, 3].set(trans)
    k0 = jnp.asarray(tgt.intrinsics)
    k = k0.at[:, 0, 2].set(w - k0[:, 0, 2])
    return GeometryTargets(
        images=maps(tgt.images, 4), c2w=pick(c2w, c2w0), intrinsics=pick(k, k0),
        rays=vectors(tgt.rays), depth=maps(tgt.depth, 3), depth_z=maps(tgt.depth_z, 3), points=vectors(tgt.points),
        flow=vectors(tgt.flow), valid=maps(tgt.valid, 3), dynamic=maps(tgt.dynamic, 2),
    )


__all__ = ["GeometryTargets", "make_targets", "mirror"]
