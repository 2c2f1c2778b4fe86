"""Rollouts: the scan equals a hand-written numpy Euler–Maruyama loop with CFG, log-probs are the transition
densities, noise is independent per sample, the Fast window mixes ODE/SDE, ode_sample is the Euler ODE."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.rl.rollout import guided_velocity, num_train_steps, ode_sample, rollout
from vggrpo_jax.rl.schedule import wan_sigmas
from vggrpo_jax.rl.sde import make_noise_rule

B, C, L, D = 4, 6, 3, 5
T = 6
SIGMAS = wan_sigmas(T)
W_SCALE = 4.5

_rng = np.random.default_rng(0)
W = _rng.standard_normal((C, C)).astype(np.float32) * 0.5
U = _rng.standard_normal((D, C)).astype(np.float32) * 0.5


def velocity_fn(x, t, text):
    """A text- and time-conditioned toy network; `text` is a pytree {"emb": (N, L, D), "gain": (N,)}."""
    assert x.shape[0] == t.shape[0] == text["emb"].shape[0]
    h = x @ W + text["emb"].mean(axis=1) @ U
    return jnp.tanh(h) * (t.astype(jnp.float32) / 1000.0)[:, None] * text["gain"][:, None]


def np_velocity(x, t, emb, gain):
    h = x @ W.astype(np.float64) + emb.mean(axis=1) @ U.astype(np.float64)
    return np.tanh(h) * (t / 1000.0)[:, None] * gain[:, None]


def make_text():
    rng = np.random.default_rng(1)
    cond = {"emb": rng.standard_normal((B, L, D)).astype(np.float32), "gain": np.full((B,), 1.5, np.float32)}
    uncond = {"emb": np.zeros((1, L, D), np.float32), "gain": np.ones((1,), np.float32)}
    return cond, uncond


def np_cfg_velocity(x, t, cond, uncond):
    vc = np_velocity(x, t, cond["emb"].astype(np.float64), cond["gain"].astype(np.float64))
    ue = np.broadcast_to(uncond["emb"], cond["emb"].shape).astype(np.float64)
    ug = np.broadcast_to(uncond["gain"], cond["gain"].shape).astype(np.float64)
    vu = np_velocity(x, t, ue, ug)
    return vu + W_SCALE * (vc - vu)


@pytest.fixture(scope="module")
def traj_and_inputs():
    cond, uncond = make_text()
    rule = make_noise_rule("flow_grpo_wan", SIGMAS)
    x_init = np.random.default_rng(2).standard_normal((B, C)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    fn = jax.jit(lambda x, k, c, u: rollout(velocity_fn, x, SIGMAS, k, noise_rule=rule, cond=c, uncond=u,
                                              cfg_scale=W_SCALE))
    return fn(x_init, key, cond, uncond), x_init, key, cond, uncond, rule


def test_rollout_matches_numpy_loop(traj_and_inputs):
    traj, x_init, key, cond, uncond, rule = traj_and_inputs
    assert traj.latents.shape == (T + 1, B, C) and traj.log_probs.shape == (T, B)
    np.testing.assert_array_equal(traj.timesteps, [int(float(s) * 1000) for s in SIGMAS[:-1]])
    np.testing.assert_array_equal(traj.train_steps, np.arange(num_train_steps(T, 0.99)))
    assert int(traj.train_steps.shape[0]) == T - 1  # int(6·0.99) = 5: the last step is not trained
    assert bool(jnp.all(traj.sde_mask))
    np.testing.assert_array_equal(traj.z0, traj.latents[-1])

    x = x_init.astype(np.float64)
    for i in range(T):
        sigma, sigma_next = float(SIGMAS[i]), float(SIGMAS[i + 1])
        t = np.full((B,), int(sigma * 1000), np.float64)
        v = np_cfg_velocity(x, t, cond, uncond)
        g = rule.scale * sigma
        d = sigma_next - sigma
        mean = x + d * (v + g**2 / (2 * sigma) * (x + (1 - sigma) * v))
        std = g * math.sqrt(-d)
        noise = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (B, C), jnp.float32), np.float64)
        x_next = mean + std * noise
        lp = (-((x_next - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).mean(1)
        np.testing.assert_allclose(traj.latents[i + 1], x_next, rtol=1e-4, atol=1e-4, err_msg=f"step {i}")
        np.testing.assert_allclose(traj.log_probs[i], lp, rtol=1e-4, atol=1e-4, err_msg=f"step {i}")
        x = np.asarray(traj.latents[i + 1], np.float64)  # follow the stored path (no error accumulation)


def test_noise_is_independent_per_sample():
    cond, uncond = make_text()
    cond = jax.tree.map(lambda a: np.repeat(a[:1], B, axis=0), cond)  # one prompt, K = B copies
    x_init = np.repeat(np.random.default_rng(3).standard_normal((1, C)).astype(np.float32), B, axis=0)
    traj = rollout(velocity_fn, x_init, SIGMAS, jax.random.PRNGKey(0), noise_rule=make_noise_rule("sd3", SIGMAS),
                   cond=cond, uncond=uncond, cfg_scale=W_SCALE)
    z0 = np.asarray(traj.z0)
    for a in range(B):
        for b in range(a + 1, B):
            assert np.max(np.abs(z0[a] - z0[b])) > 1e-3


def test_guided_velocity_one_call_on_interleaved_batch():
    cond, uncond = make_text()
    calls = []

    def spy(x, t, text):
        calls.append(x.shape[0])
        # rows 2b (prompt) and 2b+1 (negative prompt) must carry the same latent and timestep
        np.testing.assert_array_equal(x[0::2], x[1::2])
        np.testing.assert_array_equal(text["emb"][1::2], np.broadcast_to(uncond["emb"], (B, L, D)))
        np.testing.assert_array_equal(text["emb"][0::2], cond["emb"])
        return velocity_fn(x, t, text)

    x = np.random.default_rng(4).standard_normal((B, C)).astype(np.float32)
    t = np.full((B,), 500, np.int32)
    v = guided_velocity(spy, jnp.asarray(x), jnp.asarray(t), cond, uncond, W_SCALE)
    assert calls == [2 * B]
    np.testing.assert_allclose(v, np_cfg_velocity(x.astype(np.float64), t.astype(np.float64), cond, uncond),
                               rtol=1e-5, atol=1e-5)
    # No negative prompt: plain conditional velocity, one call on B rows.
    v1 = guided_velocity(velocity_fn, jnp.asarray(x), jnp.asarray(t), cond, None, W_SCALE)
    np.testing.assert_allclose(v1, np_velocity(x.astype(np.float64), t.astype(np.float64),
                                               cond["emb"].astype(np.float64), cond["gain"].astype(np.float64)),
                               rtol=1e-5, atol=1e-5)


def test_fast_window_and_traced_start():
    cond, uncond = make_text()
    rule = make_noise_rule("flow_grpo_wan", SIGMAS)
    x_init = np.random.default_rng(5).standard_normal((B, C)).astype(np.float32)
    fn = jax.jit(lambda start: rollout(velocity_fn, x_init, SIGMAS, jax.random.PRNGKey(1), noise_rule=rule,
                                       cond=cond, uncond=uncond, cfg_scale=W_SCALE, sde_window=(start, 2)))
    traj = fn(jnp.int32(2))  # traced start
    np.testing.assert_array_equal(traj.sde_mask, [False, False, True, True, False, False])
    np.testing.assert_array_equal(traj.train_steps, [2, 3])
    lp = np.asarray(traj.log_probs)
    assert np.all(lp[[0, 1, 4, 5]] == 0.0) and np.all(lp[[2, 3]] != 0.0)
    for i in range(T):
        x = np.asarray(traj.latents[i], np.float64)
        t = np.full((B,), int(float(SIGMAS[i]) * 1000), np.float64)
        ode = x + (float(SIGMAS[i + 1]) - float(SIGMAS[i])) * np_cfg_velocity(x, t, cond, uncond)
        diff = np.max(np.abs(np.asarray(traj.latents[i + 1]) - ode))
        if traj.sde_mask[i]:
            assert diff > 1e-3, f"step {i} should be stochastic"
        else:
            assert diff < 1e-5, f"step {i} should be the ODE step"
    with pytest.raises(ValueError, match="start"):
        rollout(velocity_fn, x_init, SIGMAS, jax.random.PRNGKey(1), noise_rule=rule, cond=cond, uncond=uncond,
                sde_window=(5, 2))
    with pytest.raises(ValueError, match="length"):
        rollout(velocity_fn, x_init, SIGMAS, jax.random.PRNGKey(1), noise_rule=rule, cond=cond, uncond=uncond,
                sde_window=(0, 0))


def test_ode_sample_is_deterministic_euler():
    cond, uncond = make_text()
    x_init = np.random.default_rng(6).standard_normal((B, C)).astype(np.float32)
    sig = wan_sigmas(10)
    z0 = ode_sample(velocity_fn, x_init, sig, cond=cond, uncond=uncond, cfg_scale=W_SCALE)
    x = x_init.astype(np.float64)
    for i in range(10):
        t = np.full((B,), int(float(sig[i]) * 1000), np.float64)
        x = x + (float(sig[i + 1]) - float(sig[i])) * np_cfg_velocity(x, t, cond, uncond)
    np.testing.assert_allclose(z0, x, rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise():
    cond, uncond = make_text()
    rule = make_noise_rule("flow_grpo_wan", SIGMAS)
    x = np.zeros((B, C), np.float32)
    with pytest.raises(ValueError, match="cond has batch"):
        rollout(velocity_fn, x[:2], SIGMAS, jax.random.PRNGKey(0), noise_rule=rule, cond=cond, uncond=uncond)
    bad_uncond = {"emb": np.zeros((2, L, D), np.float32), "gain": np.ones((2,), np.float32)}
    with pytest.raises(ValueError, match="uncond must have batch"):
        rollout(velocity_fn, x, SIGMAS, jax.random.PRNGKey(0), noise_rule=rule, cond=cond, uncond=bad_uncond)
    with pytest.raises(ValueError, match="decreasing"):
        rollout(velocity_fn, x, SIGMAS[::-1], jax.random.PRNGKey(0), noise_rule=rule, cond=cond, uncond=uncond)
    with pytest.raises(ValueError, match="velocity_fn returned"):
        rollout(lambda x, t, c: x[:, :2], x, SIGMAS, jax.random.PRNGKey(0), noise_rule=rule, cond=cond,
                uncond=uncond)
    with pytest.raises(ValueError, match="train_fraction"):
        num_train_steps(20, 0.0)


def test_sharded_rollout_matches_single_device(traj_and_inputs):
    """Batch over ("data", "fsdp") on a 2×4 mesh: same noise (partitionable PRNG), same trajectory."""
    from jax.sharding import NamedSharding, PartitionSpec

    from vggrpo_jax.parallel import make_mesh
    from vggrpo_jax.rl.sharding import batch_leading_sharding, replicated_sharding, trajectory_sharding

    traj, x_init, key, cond, uncond, rule = traj_and_inputs
    x8 = np.concatenate([x_init, x_init[::-1]], axis=0)  # B = 8: one sample per device
    cond8 = jax.tree.map(lambda a: np.concatenate([a, a[::-1]], axis=0), cond)
    fn = lambda x, c, u: rollout(velocity_fn, x, SIGMAS, key, noise_rule=rule, cond=c, uncond=u,  # noqa: E731
                                 cfg_scale=W_SCALE)
    ref = jax.jit(fn)(x8, cond8, uncond)
    mesh = make_mesh({"data": 2, "fsdp": 4})
    with jax.set_mesh(mesh):
        x_sh = jax.device_put(x8, NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
        c_sh = jax.device_put(cond8, batch_leading_sharding(cond8, mesh))
        u_sh = jax.device_put(uncond, replicated_sharding(uncond, mesh))
        out = jax.jit(fn, out_shardings=trajectory_sharding(ref, mesh))(x_sh, c_sh, u_sh)
    assert out.latents.addressable_shards[0].data.shape[1] == 1
    np.testing.assert_allclose(out.latents, ref.latents, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.log_probs, ref.log_probs, rtol=1e-6, atol=1e-6)


def test_branch_rollout_shares_the_ode_path_then_branches():
    from vggrpo_jax.rl.rollout import branch_rollout

    cond, uncond = make_text()
    rule = make_noise_rule("flow_grpo_wan", SIGMAS)
    p, k, branch, n_sde = 2, 3, 2, 2
    cond_p = jax.tree.map(lambda a: a[:p], cond)
    x_init = np.random.default_rng(8).standard_normal((p, C)).astype(np.float32)
    traj = jax.jit(lambda x, c, u: branch_rollout(
        velocity_fn, x, SIGMAS, jax.random.PRNGKey(2), group_size=k, branch_step=branch, sde_steps=n_sde,
        noise_rule=rule, cond=c, uncond=u, cfg_scale=W_SCALE))(x_init, cond_p, uncond)
    assert traj.latents.shape == (T + 1, p * k, C)
    np.testing.assert_array_equal(traj.train_steps, [2, 3])
    np.testing.assert_array_equal(traj.sde_mask, [False, False, True, True, False, False])
    lat = np.asarray(traj.latents).reshape(T + 1, p, k, C)
    # Up to the branch every copy of a prompt sits on the same deterministic path, after it they differ.
    for i in range(branch + 1):
        np.testing.assert_array_equal(lat[i], np.repeat(lat[i][:, :1], k, axis=1))
    assert np.min(np.abs(lat[-1][:, 0] - lat[-1][:, 1])) > 1e-4
    # Every non-window step is the Euler ODE step with its prompt's text (group-major rows).
    cond_b = jax.tree.map(lambda a: np.repeat(a, k, axis=0), cond_p)
    for i in range(T):
        x = np.asarray(traj.latents[i], np.float64)
        t = np.full((p * k,), int(float(SIGMAS[i]) * 1000), np.float64)
        ode = x + (float(SIGMAS[i + 1]) - float(SIGMAS[i])) * np_cfg_velocity(x, t, cond_b, uncond)
        diff = np.max(np.abs(np.asarray(traj.latents[i + 1]) - ode))
        assert (diff > 1e-3) if traj.sde_mask[i] else (diff < 1e-5), i
    assert np.all(np.asarray(traj.log_probs)[[0, 1, 4, 5]] == 0) and np.all(np.asarray(traj.log_probs)[[2, 3]] != 0)
    with pytest.raises(ValueError, match="branch_step"):
        branch_rollout(velocity_fn, x_init, SIGMAS, jax.random.PRNGKey(2), group_size=k, branch_step=5, sde_steps=2,
                       noise_rule=rule, cond=cond_p, uncond=uncond)


def test_num_train_steps_is_flow_grpos_int_of_the_product():
    # Flow-GRPO: int(num_steps * timestep_fraction), the float64 product truncated (50 × 0.58 = 28.999…).
    for t in range(1, 60):
        for fraction in (0.58, 0.99, 0.6, 0.7, 0.29, 1.0, 0.33):
            if int(t * fraction) >= 1:
                assert num_train_steps(t, fraction) == int(t * fraction), (t, fraction)
    assert num_train_steps(50, 0.58) == 28
