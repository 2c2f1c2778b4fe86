"""Reward guidance of ODE sampling (rl/reward_guidance.py) on an analytic model and reward.

The velocity is a small nonlinear function of (x, t) with a known clean target; the reward r(x) = −‖x − target‖²
has a known gradient. Checked: the sign (guidance moves the prediction and the sample TOWARD higher reward through
the real Wan ODE step), scale 0 equals `ode_sample` bit for bit, per-sample clipping, non-finite rewards are skipped,
schedules, and the step-spec parser's errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax import rl
from vggrpo_jax.rl.reward_guidance import (GuidanceOptions, clip_per_sample, parse_steps, reward_gradient,
                                           reward_guided_ode_sample, schedule_weight)

B, D = 3, 6
TARGET = jnp.linspace(-1.0, 1.0, D)


def _velocity(params):
    w, b = params

    def velocity_fn(x, t, text):
        # Rows are independent; the text scales each row (so CFG's cond/uncond rows differ).
        tt = (t.astype(jnp.float32) / 1000.0)[:, None]
        return jnp.tanh(x @ w + b * tt) * text["s"][:, None] + 0.3 * x

    return velocity_fn


def _params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return 0.5 * jax.random.normal(k1, (D, D)), jax.random.normal(k2, (D,))


def _reward(z):
    return -jnp.sum((z - TARGET) ** 2, axis=-1)


def _inputs():
    x = jax.random.normal(jax.random.key(1), (B, D))
    cond = {"s": jnp.array([1.0, 0.5, -0.7])}
    uncond = {"s": jnp.array([0.2])}
    return x, cond, uncond


SIGMAS = np.asarray(rl.wan_sigmas(6))


@pytest.mark.parametrize("through_model", [True, False])
def test_scale_zero_is_the_unguided_sample_bit_for_bit(through_model):
    x, cond, uncond = _inputs()
    vel = _velocity(_params())
    opts = GuidanceOptions(steps=tuple(range(6)), through_model=through_model)
    plain = jax.jit(lambda x: rl.ode_sample(vel, x, SIGMAS, cond=cond, uncond=uncond, cfg_scale=3.0))(x)
    guided = jax.jit(lambda x, s: reward_guided_ode_sample(vel, _reward, x, SIGMAS, s, opts, cond=cond,
                                                           uncond=uncond, cfg_scale=3.0))
    z0, trace = guided(x, 0.0)
    np.testing.assert_array_equal(np.asarray(z0), np.asarray(plain))
    assert np.all(np.isnan(np.asarray(trace.reward)))  # no step was guided
    z1, trace = guided(x, 0.05)  # same program, another scale
    assert not np.array_equal(np.asarray(z1), np.asarray(plain))
    assert np.all(np.isfinite(np.asarray(trace.reward)))


@pytest.mark.parametrize("through_model", [True, False])
def test_guidance_moves_the_sample_toward_higher_reward(through_model):
    x, cond, uncond = _inputs()
    vel = _velocity(_params())
    opts = GuidanceOptions(steps=tuple(range(1, 6)), schedule="ratio", clip=0.0, through_model=through_model)
    run = jax.jit(lambda s: reward_guided_ode_sample(vel, _reward, x, SIGMAS, s, opts, cond=cond, uncond=uncond,
                                                     cfg_scale=3.0)[0])
    rewards = [np.asarray(_reward(run(s))) for s in (0.0, 0.01, 0.03)]
    # Every sample's final reward rises with the scale.
    assert np.all(rewards[1] > rewards[0]) and np.all(rewards[2] > rewards[1]), rewards


@pytest.mark.parametrize("through_model", [True, False])
def test_one_guided_step_raises_the_reward_of_the_prediction(through_model):
    """x̂0 = x − σ·ṽ scores higher than x − σ·v, and the guided ODE step equals the plain one moved along +∇r."""
    x, cond, uncond = _inputs()
    vel = _velocity(_params())
    sigma, sigma_next = SIGMAS[2], SIGMAS[3]
    t = jnp.full((B,), int(sigma * 1000), jnp.int32)
    velocity = lambda x_: rl.guided_velocity(vel, x_, t, cond, uncond, 3.0)  # noqa: E731
    v, r, grad = reward_gradient(velocity, _reward, x, sigma, through_model)
    if not through_model:  # ∇_x r(x − σ·v) with v held fixed is the analytic −2(x̂0 − target)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(-2 * (x - sigma * v - TARGET)), rtol=1e-5, atol=1e-6)
    s = 1e-3 * schedule_weight("ratio", sigma)
    v_tilde = v - s * grad
    assert np.all(np.asarray(_reward(x - sigma * v_tilde)) > np.asarray(r))
    # The exact gradient also points up the reward of the prediction as a function of x itself.
    step_x = x + 1e-3 * grad
    r_moved = _reward(step_x - sigma * velocity(step_x))
    if through_model:
        assert np.all(np.asarray(r_moved) > np.asarray(r))
    moved = rl.ode_step(x, v_tilde, sigma, sigma_next) - rl.ode_step(x, v, sigma, sigma_next)
    np.testing.assert_allclose(np.asarray(moved), np.asarray((sigma - sigma_next) * s * grad), rtol=1e-4, atol=1e-7)


def test_exact_gradient_matches_finite_differences():
    x, cond, uncond = _inputs()
    vel = _velocity(_params())
    sigma = SIGMAS[1]
    t = jnp.full((B,), int(sigma * 1000), jnp.int32)
    with jax.enable_x64(True):
        x64 = x.astype(jnp.float64)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), _params())
        vel64 = _velocity(params)
        velocity = lambda x_: vel64(x_, t, {"s": cond["s"].astype(jnp.float64)})  # noqa: E731
        f = lambda x_: _reward(x_ - sigma * velocity(x_))  # noqa: E731
        g = jax.grad(lambda x_: jnp.sum(f(x_)))(x64)
        d = jax.random.normal(jax.random.key(3), x64.shape, jnp.float64)
        eps = 1e-6
        fd = (f(x64 + eps * d) - f(x64 - eps * d)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(jnp.sum(g * d, axis=1)), np.asarray(fd), rtol=1e-7)


def test_clip_is_per_sample_and_nonfinite_rows_are_skipped():
    grad = jnp.stack([jnp.full((2, 2), 3.0), jnp.full((2, 2), 0.1), jnp.full((2, 2), jnp.nan)])
    reward = jnp.array([0.0, 1.0, 2.0])
    out, norm, skipped = clip_per_sample(grad, reward, clip=1.0)
    np.testing.assert_allclose(np.asarray(norm), [6.0, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out).reshape(3, -1), axis=1), [1.0, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(skipped), [0.0, 0.0, 1.0])
    _, _, skipped = clip_per_sample(jnp.ones((2, 3)), jnp.array([-jnp.inf, 1.0]), clip=0.0)
    np.testing.assert_array_equal(np.asarray(skipped), [1.0, 0.0])


def test_a_sample_with_a_nonfinite_reward_is_left_unguided():
    x, cond, uncond = _inputs()
    vel = _velocity(_params())

    def reward(z):  # sample 0 has no defined reward (like r_geo = −inf)
        r = _reward(z)
        return r.at[0].set(-jnp.inf)

    opts = GuidanceOptions(steps=(1, 2, 3))
    z_plain = rl.ode_sample(vel, x, SIGMAS, cond=cond, uncond=uncond, cfg_scale=3.0)
    z, trace = reward_guided_ode_sample(vel, reward, x, SIGMAS, 0.1, opts, cond=cond, uncond=uncond, cfg_scale=3.0)
    np.testing.assert_allclose(np.asarray(z[0]), np.asarray(z_plain[0]), rtol=1e-6)
    assert not np.allclose(np.asarray(z[1:]), np.asarray(z_plain[1:]))
    np.testing.assert_array_equal(np.asarray(trace.skipped)[1:4], [[1, 0, 0]] * 3)
    assert np.all(np.asarray(trace.skipped)[[0, 4, 5]] == 0)


def test_schedules():
    s = jnp.array([0.75, 0.5, 0.0])
    np.testing.assert_allclose(np.asarray(schedule_weight("ratio", s)), [3.0, 1.0, 0.0])
    np.testing.assert_allclose(np.asarray(schedule_weight("sigma", s)), [0.75, 0.5, 0.0])
    np.testing.assert_allclose(np.asarray(schedule_weight("one_minus_sigma", s)), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(np.asarray(schedule_weight("constant", s)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="not one of"):
        GuidanceOptions(steps=(0,), schedule="cosine")


def test_step_specs():
    assert parse_steps("all", 4) == (0, 1, 2, 3)
    assert parse_steps("3,1,1", 5) == (1, 3)
    assert parse_steps("::2", 5) == (0, 2, 4)
    assert parse_steps("2:", 5) == (2, 3, 4)
    assert parse_steps("-2:", 5) == (3, 4)
    for bad in ("every 2", "1:2:3:4", "::0", "a,b", "-1"):
        with pytest.raises(ValueError, match=r"config.guidance.steps=.*give 'all'"):
            parse_steps(bad, 5)
    with pytest.raises(ValueError, match=r"steps \[7\] lie outside 0..4"):
        parse_steps("1,7", 5)
    with pytest.raises(ValueError, match="selects no step"):
        parse_steps("9:", 5)
