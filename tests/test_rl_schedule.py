"""Wan flow schedule: reference numbers (flow_grpo.md) and an independent per-entry numpy computation."""
import numpy as np
import pytest

from vggrpo_jax.rl.schedule import check_sigmas, timesteps, wan_sigmas


def test_wan_sigmas_reference_numbers_n20():
    s = wan_sigmas(20, shift=3.0)
    assert s.shape == (21,) and s.dtype == np.float32
    # Values quoted by the reference for N = 20 (4 decimals): first three and last three.
    np.testing.assert_allclose(s[:3], [0.9997, 0.9824, 0.9639], atol=5e-5)
    np.testing.assert_allclose(s[-3:], [0.2498, 0.1362, 0.0], atol=5e-5)
    assert s[-1] == 0.0
    assert np.all(np.diff(s) < 0)


@pytest.mark.parametrize("n", [1, 2, 7, 20, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_wan_sigmas_matches_direct_formula(n, shift):
    # Step i starts at raw_i = 0.999·(N − i)/N (the flipped linspace without its trailing 0), then shifted.
    expected = []
    for i in range(n):
        raw = 0.999 * (n - i) / n
        expected.append(shift * raw / (1 + (shift - 1) * raw))
    expected.append(0.0)
    np.testing.assert_allclose(wan_sigmas(n, shift), np.asarray(expected), rtol=1e-6, atol=1e-7)


def test_shift_one_is_linear():
    np.testing.assert_allclose(wan_sigmas(4, 1.0), [0.999, 0.74925, 0.4995, 0.24975, 0.0], rtol=1e-6)


def test_timesteps_truncate():
    s = wan_sigmas(20)
    t = timesteps(s[:-1])
    assert t.dtype == np.int32 and t.shape == (20,)
    assert [int(x) for x in t[:3]] == [999, 982, 963]
    assert [int(x) for x in t[-2:]] == [249, 136]
    assert [int(x) for x in t] == [int(float(x) * 1000) for x in s[:-1]]
    np.testing.assert_array_equal(timesteps(np.array([0.5009, 0.0, 1.0], np.float32)), [500, 0, 1000])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="num_steps"):
        wan_sigmas(0)
    with pytest.raises(ValueError, match="shift"):
        wan_sigmas(10, shift=0.0)
    with pytest.raises(ValueError, match="1-D"):
        timesteps(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        timesteps(np.array([1.5]))
    with pytest.raises(ValueError, match="decreasing"):
        check_sigmas(np.array([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        check_sigmas(np.array([0.5]))


def _reference_timesteps(n, shift):
    """diffusers / Flow-GRPO: the float64 schedule, timesteps = int(σ·1000) truncated in float64."""
    raw = np.linspace(0.0, 0.999, n + 1, dtype=np.float64)
    sig = (shift * raw / (1.0 + (shift - 1.0) * raw))[::-1][:-1]
    return (sig * 1000).astype(np.int64)


def test_timesteps_truncate_the_float64_schedule_like_diffusers():
    from vggrpo_jax.rl.schedule import wan_timesteps

    cases = [(n, 1.0) for n in range(1, 101)] + [(121, 7.5), (20, 3.0), (50, 5.0)]
    for n, shift in cases:
        expected = _reference_timesteps(n, shift)
        np.testing.assert_array_equal(wan_timesteps(n, shift), expected, err_msg=f"N={n} shift={shift}")
        np.testing.assert_array_equal(timesteps(wan_sigmas(n, shift, np.float64)[:-1]), expected)
    # The float32 schedule is one lower where σ32 sits an ulp below the integer (what the float64 path fixes).
    assert timesteps(wan_sigmas(21, 1.0)[:-1]).tolist() != _reference_timesteps(21, 1.0).tolist()
    # The sampler takes its timesteps from the schedule at the schedule's own precision.
    import jax
    import jax.numpy as jnp

    from vggrpo_jax.rl.rollout import ode_sample

    seen = []

    def velocity(x, t, cond):
        jax.debug.callback(lambda v: seen.append(int(v[0])), t)
        return jnp.zeros_like(x)

    jax.block_until_ready(ode_sample(velocity, jnp.zeros((1, 2)), wan_sigmas(121, 7.5, np.float64), cond=None))
    jax.effects_barrier()
    assert seen == _reference_timesteps(121, 7.5).tolist()
