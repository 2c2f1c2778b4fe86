"""Camera-motion smoothness reward r_motion (VGGRPO, "Rewards" 1)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from vggrpo_jax.geometry.rotation import safe_norm, so3_log


@struct.dataclass
class MotionSmoothness:
    """reward (...) in [0, 1]; e_trans (...) and e_rot (...) >= 0 (inf for non-finite poses, then reward = 0)."""

    reward: jax.Array
    e_trans: jax.Array
    e_rot: jax.Array


def _normalised_jerk(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """x (..., T-1, 3) velocities -> 1/(T-2) · sum_i ||x_i - x_{i-1}|| / (||x_i|| + ||x_{i-1}|| + eps)."""
    acc = x[..., 1:, :] - x[..., :-1, :]
    speed = safe_norm(x)  # exact 0 with zero gradient for a still camera: 0 / (0 + 0 + eps) = 0, not NaN
    return jnp.mean(safe_norm(acc) / (speed[..., 1:] + speed[..., :-1] + eps), axis=-1)


def motion_smoothness(c2w: jnp.ndarray, eps: float = 1e-8) -> MotionSmoothness:
    """r_motion = ½ (1/(1+e_trans) + 1/(1+e_rot)) from camera-to-world poses c2w (..., T, 4, 4), T >= 3.

    e_trans = 1/(T−2) Σ_{i=2}^{T−1} ||a_i|| / (||v_i|| + ||v_{i−1}|| + eps), with camera centres c_i,
    v_i = c_{i+1} − c_i and a_i = v_i − v_{i−1}. e_rot has the same form with ω_i = Log(R_{i+1} R_iᵀ) (axis-angle of
    the world-frame relative rotation) and α_i = ω_i − ω_{i−1}. Both are invariant to a global rigid transform of the
    world, and e_trans also to a global scale. A still camera gives 0/(0+eps) = 0 and reward 1.

    A clip with any non-finite pose entry gets e_trans = e_rot = inf and reward 0 (the minimum), without NaNs in the
    gradient of other clips. Jittable; leading dims are batch dims.
    """
    c2w = jnp.asarray(c2w)
    if c2w.ndim < 3 or c2w.shape[-2:] != (4, 4):
        raise ValueError(f"motion_smoothness expects c2w of shape (..., T, 4, 4), got {tuple(c2w.shape)}")
    T = c2w.shape[-3]
    if T < 3:
        raise ValueError(f"motion_smoothness needs at least 3 frames (accelerations need 3 poses), got T={T}")
    if not jnp.issubdtype(c2w.dtype, jnp.floating):
        raise ValueError(f"c2w must be floating point, got {c2w.dtype}")

    finite = jnp.all(jnp.isfinite(c2w), axis=(-3, -2, -1))
    safe = jnp.where(finite[..., None, None, None], c2w, jnp.eye(4, dtype=c2w.dtype))
    centers = safe[..., :3, 3]
    R = safe[..., :3, :3]
    rel = R[..., 1:, :, :] @ jnp.swapaxes(R[..., :-1, :, :], -1, -2)
    e_trans = _normalised_jerk(centers[..., 1:, :] - centers[..., :-1, :], eps)
    e_rot = _normalised_jerk(so3_log(rel), eps)
    reward = 0.5 * (1.0 / (1.0 + e_trans) + 1.0 / (1.0 + e_rot))
    inf = jnp.asarray(jnp.inf, e_trans.dtype)
    return MotionSmoothness(
        reward=jnp.where(finite, reward, 0.0),
        e_trans=jnp.where(finite, e_trans, inf),
        e_rot=jnp.where(finite, e_rot, inf),
    )
