"""Group advantages: per-group standardisation (population std), weighted mean, clipping, degenerate groups."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.rewards import group_advantages

EPS = 1e-4
# Jitted: one compile per input structure instead of one per eager op (which dominates on a loaded CPU).
ga = jax.jit(group_advantages, static_argnames=("clip",))


def _np_standardise(r):
    return (r - r.mean(-1, keepdims=True)) / (r.std(-1, keepdims=True) + EPS)  # np.std is the population std


def test_each_reward_standardised_within_each_group():
    rng = np.random.default_rng(0)
    motion = rng.uniform(0, 1, (4, 6)).astype(np.float32)
    geo = -rng.uniform(0, 0.2, (4, 6)).astype(np.float32)
    adv = ga({"motion": motion, "geo": geo})
    expected = 0.5 * (_np_standardise(motion) + _np_standardise(geo))
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
    # Groups are independent: shifting / rescaling one prompt's rewards changes nothing.
    moved = motion.copy()
    moved[2] = 10 * moved[2] + 3
    np.testing.assert_allclose(ga({"motion": moved, "geo": geo}), adv, rtol=1e-3, atol=1e-4)
    # Each group's advantages of a single reward have mean 0 and population std ~1.
    single = np.asarray(ga({"geo": geo}))
    np.testing.assert_allclose(single.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(single.std(-1), 1, atol=5e-3)  # σ/(σ + eps) with σ ~ 0.05


def test_weights_are_normalised_and_applied():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 5)).astype(np.float32)
    adv = jax.jit(lambda r: group_advantages(r, weights={"a": 3.0, "b": 1.0}))({"a": a, "b": b})
    np.testing.assert_allclose(adv, 0.75 * _np_standardise(a) + 0.25 * _np_standardise(b), rtol=1e-5, atol=1e-6)


def test_zero_variance_group_gives_zero_not_nan():
    r = np.array([[0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 0.0, 1.0]], np.float32)
    adv = np.asarray(ga({"r": r}))
    assert np.all(np.isfinite(adv))
    np.testing.assert_array_equal(adv[0], 0.0)
    np.testing.assert_allclose(adv[1], [-1, 1, -1, 1], atol=1e-3)


def test_clipping_after_averaging():
    r = np.zeros((1, 50), np.float32)
    r[0, 0] = 1.0  # z = sqrt(49) = 7 for the outlier, before clipping
    adv = np.asarray(ga({"r": r}, clip=5.0))
    assert adv[0, 0] == pytest.approx(5.0)
    assert adv[0, 1] == pytest.approx(-1 / 7, rel=1e-3)
    # Two rewards whose standardised values are 7 and -7 average to 0 before the clip.
    adv2 = np.asarray(ga({"a": r, "b": -r}))
    np.testing.assert_allclose(adv2, 0.0, atol=1e-6)


def test_non_finite_reward_gets_the_worst_advantage():
    r = np.array([[1.0, 2.0, np.nan, 3.0]], np.float32)
    adv = np.asarray(ga({"r": r}, clip=4.0))
    assert adv[0, 2] == -4.0
    np.testing.assert_allclose(adv[0, [0, 1, 3]], _np_standardise(np.array([1.0, 2.0, 3.0])), rtol=1e-5)
    r_inf = np.array([[-np.inf, 0.1, 0.2]], np.float32)  # e.g. r_geo of a sample with a NaN camera
    assert np.all(np.isfinite(ga({"r": r_inf})))


def test_a_group_that_failed_entirely_carries_no_signal():
    # Group 0: every r_geo is -inf (no valid pixel anywhere); group 1 is ordinary. Group 0's advantage comes from the
    # other reward alone, not from a constant -clip that would push all its samples down together.
    geo = np.array([[-np.inf, -np.inf, -np.inf], [0.1, 0.2, 0.3]], np.float32)
    motion = np.array([[0.1, 0.2, 0.3], [0.3, 0.3, 0.3]], np.float32)
    adv = np.asarray(ga({"motion": motion, "geo": geo}))
    np.testing.assert_allclose(adv[0], 0.5 * _np_standardise(motion[0]), rtol=1e-4)
    np.testing.assert_allclose(adv[1], 0.5 * _np_standardise(geo[1]), rtol=1e-4)


def test_leading_batch_dims_jit_and_vmap():
    rng = np.random.default_rng(2)
    r = {k: rng.normal(size=(2, 3, 4)).astype(np.float32) for k in ("m", "g")}
    out = ga(r)
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out[1], ga({k: v[1] for k, v in r.items()}), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(group_advantages)(r), out, rtol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        group_advantages({"a": jnp.zeros((2, 3)), "b": jnp.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"\(\.\.\., P, K\)"):
        group_advantages({"a": jnp.zeros((3,))})
    with pytest.raises(ValueError, match="weights keys"):
        group_advantages({"a": jnp.zeros((2, 3))}, weights={"b": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        group_advantages({})
