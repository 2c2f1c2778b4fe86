"""r_motion: exact zeros for constant-velocity paths, a hand-computed value, monotone in jitter, invariances."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vggrpo_jax.data.toyworld import camera_path
from vggrpo_jax.geometry import pose_from_rotation_translation, so3_exp
from vggrpo_jax.rewards import motion_smoothness

# One compile per input shape; the tests share T = 9 (and one batched shape) to keep the module fast.
T = 9
ms = jax.jit(motion_smoothness)
grad_reward = jax.jit(jax.grad(lambda c: jnp.sum(motion_smoothness(c).reward)))
paths = jax.jit(jax.vmap(lambda k, amp: camera_path(k, 0, T, amp), in_axes=(0, None)))  # orbits, (B, T, 4, 4)


def _poses(rotvecs, centers):
    return pose_from_rotation_translation(so3_exp(jnp.asarray(rotvecs, jnp.float32)), jnp.asarray(centers, jnp.float32))


def test_constant_velocity_line_is_perfectly_smooth():
    i = np.arange(T)[:, None]
    # Moving on a line while turning at a constant rate about a fixed axis: v and ω are both constant.
    out = ms(_poses(i * np.array([0.0, 0.05, 0.02]), np.array([1.0, 2.0, 3.0]) + i * np.array([0.3, -0.1, 0.2])))
    assert float(out.e_trans) < 1e-5 and float(out.e_rot) < 1e-5
    assert float(out.reward) == pytest.approx(1.0, abs=1e-5)


def test_constant_angular_velocity_orbit():
    """Orbit at dθ per frame: ω is constant (e_rot = 0); |a| = 2 sin(dθ/2)|v|, so e_trans = sin(dθ/2) exactly."""
    dth = 0.05
    rz = lambda th: so3_exp(jnp.array([0.0, 0.0, th]))
    R0 = so3_exp(jnp.array([1.9, 0.0, 0.0]))  # some fixed camera tilt
    c0 = jnp.array([4.0, 0.0, 1.5])
    R = jnp.stack([rz(k * dth) @ R0 for k in range(T)])
    c = jnp.stack([rz(k * dth) @ c0 for k in range(T)])
    out = ms(pose_from_rotation_translation(R, c))
    assert float(out.e_rot) < 1e-4
    assert float(out.e_trans) == pytest.approx(math.sin(dth / 2), rel=1e-3)
    assert float(out.reward) == pytest.approx(0.5 * (1 / (1 + math.sin(dth / 2)) + 1), abs=1e-4)
    assert float(out.reward) > 0.98


def test_hand_computed_four_pose_example():
    c = [[0, 0, 0], [1, 0, 0], [2, 1, 0], [2, 1, 2]]
    rz = lambda a: so3_exp(jnp.array([0.0, 0.0, a]))
    rx = lambda a: so3_exp(jnp.array([a, 0.0, 0.0]))
    R = jnp.stack([jnp.eye(3), rz(0.1), rz(0.3), rz(0.3) @ rx(0.2)])
    out = ms(pose_from_rotation_translation(R, jnp.asarray(c, jnp.float32)))
    # v = (1,0,0), (1,1,0), (0,0,2); a = (0,1,0), (-1,-1,2).
    e_t = 0.5 * (1 / (1 + math.sqrt(2)) + math.sqrt(6) / (math.sqrt(2) + 2))
    # ω = 0.1ẑ, 0.2ẑ, 0.2·Rz(0.3)x̂; α = 0.1ẑ, (0.2cos.3, 0.2sin.3, −0.2) with |α| = 0.2√2.
    e_r = 0.5 * (0.1 / 0.3 + 0.2 * math.sqrt(2) / 0.4)
    assert float(out.e_trans) == pytest.approx(e_t, rel=1e-5)
    assert float(out.e_rot) == pytest.approx(e_r, rel=1e-4)
    assert float(out.reward) == pytest.approx(0.5 * (1 / (1 + e_t) + 1 / (1 + e_r)), rel=1e-5)


def test_still_camera_gives_one_and_finite_gradients():
    c2w = jnp.broadcast_to(jnp.eye(4), (T, 4, 4)).at[:, :3, 3].set(jnp.array([1.0, 2.0, 3.0]))
    out = ms(c2w)
    assert float(out.reward) == 1.0 and float(out.e_trans) == 0.0 and float(out.e_rot) == 0.0
    assert np.all(np.isfinite(grad_reward(c2w)))


def test_reward_falls_strictly_with_jitter_amplitude():
    amps = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    keys = jax.random.split(jax.random.key(0), 6)
    # The same 6 orbits and noise draws at every amplitude; only the amplitude changes.
    r = np.array([float(jnp.mean(ms(paths(keys, a).reshape(2, 3, T, 4, 4)).reward)) for a in amps])
    assert np.all(np.diff(r) < 0), r
    assert r[0] > 0.97 and r[-1] < 0.7


_vec = st.tuples(*[st.floats(-0.6, 0.6)] * 3)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(_vec, _vec), min_size=T, max_size=T),
    g_rot=_vec,
    g_t=st.tuples(*[st.floats(-3, 3)] * 3),
    scale=st.floats(0.2, 5.0),
)
def test_invariant_to_rigid_transform_and_scale(steps, g_rot, g_t, scale):
    rv = np.cumsum(np.array([s[0] for s in steps]), 0)
    dc = np.array([s[1] for s in steps])
    # Keep velocities away from 0, where the ratio ||a|| / (||v|| + ||v'|| + eps) is ill-conditioned by eps.
    assume(np.min(np.linalg.norm(dc[1:], axis=-1)) > 0.05)
    c2w = _poses(rv, np.cumsum(dc, 0))
    G = pose_from_rotation_translation(so3_exp(jnp.asarray(g_rot, jnp.float32) * 4), jnp.asarray(g_t, jnp.float32))
    base = ms(c2w)
    rigid = ms(G @ c2w)
    scaled = ms(G @ c2w.at[:, :3, 3].multiply(scale))
    for o in (rigid, scaled):
        np.testing.assert_allclose(o.e_trans, base.e_trans, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(o.e_rot, base.e_rot, rtol=2e-3, atol=2e-4)


def test_batch_dims_under_jit_and_vmap_and_gradients():
    c2w = paths(jax.random.split(jax.random.key(1), 6), 0.02).reshape(2, 3, T, 4, 4)
    out = ms(c2w)
    assert out.reward.shape == (2, 3)
    single = ms(c2w[1, 2])
    np.testing.assert_allclose(out.reward[1, 2], single.reward, rtol=1e-6)
    assert np.all((out.reward >= 0) & (out.reward <= 1))
    assert np.all(np.isfinite(grad_reward(c2w)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 3 frames"):
        motion_smoothness(jnp.broadcast_to(jnp.eye(4), (2, 4, 4)))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 4, 4\)"):
        motion_smoothness(jnp.zeros((5, 3, 4)))
    c2w = paths(jax.random.split(jax.random.key(2), 6), 0.01).reshape(2, 3, T, 4, 4)
    c2w = c2w.at[1, 0, 3, 0, 3].set(jnp.nan)  # one NaN entry in clip (1, 0)
    out = ms(c2w)
    assert float(out.reward[1, 0]) == 0.0
    assert math.isinf(float(out.e_trans[1, 0])) and math.isinf(float(out.e_rot[1, 0]))
    others = np.delete(np.asarray(out.reward).reshape(-1), 3)
    assert np.all(np.isfinite(others)) and np.all(others > 0)
    g = grad_reward(c2w)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g[0, 0]).sum()) > 0
