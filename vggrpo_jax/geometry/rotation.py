"""SO(3): quaternions (x, y, z, w) <-> rotation matrices, and the exponential / logarithm maps.

All functions broadcast over leading dimensions, are jittable, and have finite gradients everywhere, including the
identity (angle 0) and half turns (angle pi), where the textbook formulas divide by zero.
"""
from __future__ import annotations

import jax.numpy as jnp

# Below this squared norm the closed forms switch to their Taylor series (the series error is O(x^4) ~ 1e-16 there).
_SMALL_SQ = 1e-8


def _check_last(x: jnp.ndarray, shape: tuple[int, ...], name: str) -> None:
    if x.ndim < len(shape) or tuple(x.shape[-len(shape):]) != shape:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def _safe_sqrt(x: jnp.ndarray) -> jnp.ndarray:
    """sqrt(max(x, 0)) whose gradient is 0 (not inf/NaN) at and below 0."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def safe_norm(x: jnp.ndarray, axis: int = -1, keepdims: bool = False) -> jnp.ndarray:
    """Euclidean norm that is exactly 0 with gradient 0 for the zero vector."""
    return _safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


def skew(v: jnp.ndarray) -> jnp.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrix, skew(a) @ b == cross(a, b)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2)


def quaternion_to_rotation(q: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion (..., 4) in (x, y, z, w) order -> rotation matrix (..., 3, 3).

    The quaternion is normalised first, so any non-zero scale is accepted (Any4D's pose head output is one).
    """
    _check_last(q, (4,), "q")
    q = q / jnp.maximum(safe_norm(q, keepdims=True), 1e-12)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def rotation_to_quaternion(R: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) in (x, y, z, w) order with w >= 0.

    Shepperd's method: of the four algebraically equivalent formulas, use the one whose divisor (2·|component|) is
    largest; that component is always >= 1/2, so the result is well conditioned for every rotation.
    """
    _check_last(R, (3, 3), "R")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4·(component)^2 for w, x, y, z.
    sq = jnp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    mag = _safe_sqrt(sq)  # 2·|component|
    # Candidate (x, y, z, w), each scaled by 2·(its pivot component); dividing by 2·pivot gives the quaternion.
    cands = jnp.stack(
        [
            jnp.stack([m21 - m12, m02 - m20, m10 - m01, sq[..., 0]], -1),  # pivot w
            jnp.stack([sq[..., 1], m01 + m10, m02 + m20, m21 - m12], -1),  # pivot x
            jnp.stack([m01 + m10, sq[..., 2], m12 + m21, m02 - m20], -1),  # pivot y
            jnp.stack([m02 + m20, m12 + m21, sq[..., 3], m10 - m01], -1),  # pivot z
        ],
        -2,
    )
    cands = cands / (2.0 * jnp.maximum(mag, 0.1))[..., None]
    best = jnp.argmax(sq, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = jnp.where(q[..., 3:4] < 0, -q, q)
    return q / jnp.maximum(safe_norm(q, keepdims=True), 1e-12)


def so3_exp(omega: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle vector (..., 3) (angle = norm, radians) -> rotation matrix (..., 3, 3) (Rodrigues)."""
    _check_last(omega, (3,), "omega")
    th2 = jnp.sum(omega * omega, -1)
    small = th2 < _SMALL_SQ
    th2_safe = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(th2_safe)
    a = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(th) / th)
    b = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(th)) / th2_safe)
    K = skew(omega)
    eye = jnp.broadcast_to(jnp.eye(3, dtype=omega.dtype), K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def quaternion_log(q: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternion (..., 4) xyzw -> axis-angle (..., 3), angle in [0, pi] (the shorter of q and -q)."""
    _check_last(q, (4,), "q")
    q = jnp.where(q[..., 3:4] < 0, -q, q)
    v, w = q[..., :3], q[..., 3]
    n2 = jnp.sum(v * v, -1)
    small = n2 < _SMALL_SQ
    n = jnp.sqrt(jnp.where(small, 1.0, n2))
    w_safe = jnp.where(small, jnp.maximum(w, 0.5), 1.0)
    # 2·atan2(n, w)/n, and its series 2/w·(1 − n²/(3w²)) near the identity, where w ≈ 1.
    factor = jnp.where(small, 2.0 / w_safe * (1.0 - n2 / (3.0 * w_safe * w_safe)), 2.0 * jnp.arctan2(n, w) / n)
    return factor[..., None] * v


def so3_log(R: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrix (..., 3, 3) -> axis-angle vector (..., 3) with angle in [0, pi].

    Goes through the quaternion, which stays well conditioned at both ends: near 0 by a series, and near pi because
    the quaternion's vector part then has norm ~1 (no 1/sin(theta)). At exactly pi the sign of the axis is arbitrary.
    """
    return quaternion_log(rotation_to_quaternion(R))
