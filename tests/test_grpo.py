"""GRPO objective and update step on a toy LoRA-style velocity model: first-step ratio/KL identities, the clipped
surrogate against numpy, gradient accumulation, learning on an analytic reward, sharded == single-device,
the non-finite guard, gradient clipping and the EMA schedule."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vggrpo_jax.parallel import make_mesh
from vggrpo_jax.rewards import group_advantages
from vggrpo_jax.rl import (
    EmaConfig,
    GrpoConfig,
    UpdateConfig,
    accumulate_gradients,
    ema_decay,
    ema_update,
    grpo_loss,
    init_train_state,
    make_noise_rule,
    make_rollout_fn,
    make_train_step,
    wan_sigmas,
)
from vggrpo_jax.rl.sharding import batch_leading_sharding, replicated_sharding, trajectory_sharding

C, R = 2, 2                # latent dim, LoRA rank
F = 2 * C + 2              # features [x, text emb (C), t/1000, 1]
P, K = 4, 4                # prompts, samples per prompt
B = P * K
T = 6
SIGMAS = wan_sigmas(T)
RULE = make_noise_rule("flow_grpo_wan", SIGMAS)
CFG = 2.0


def _features(x, t, text):
    tt = (t.astype(jnp.float32) / 1000.0)[:, None]
    return jnp.concatenate([x, text["emb"], tt, jnp.ones_like(tt)], axis=1)


def _base_velocity(x, t):
    """Exact velocity of the flow with x0 ~ N(0, I): E[ε − x0 | x_σ] = (2σ − 1)/((1−σ)² + σ²)·x."""
    s = (t.astype(jnp.float32) / 1000.0)[:, None]
    return (2 * s - 1) / ((1 - s) ** 2 + s**2) * x


def policy_fn(trainable, frozen, x, t, text):
    phi = _features(x, t, text)
    return _base_velocity(x, t) + phi @ frozen["w"] + (phi @ trainable["lora_a"]) @ trainable["lora_b"]


def reference_fn(trainable, frozen, x, t, text):
    """The same network with the adapter switched off (the trainable pytree is ignored)."""
    return _base_velocity(x, t) + _features(x, t, text) @ frozen["w"]


def init_params(seed=0, b_scale=0.0):
    rng = np.random.default_rng(seed)
    frozen = {"w": jnp.asarray(0.05 * rng.standard_normal((F, C)), jnp.float32)}
    trainable = {
        "lora_a": jnp.asarray(0.5 * rng.standard_normal((F, R)), jnp.float32),
        "lora_b": jnp.asarray(b_scale * rng.standard_normal((R, C)), jnp.float32),
    }
    return trainable, frozen


TARGETS = np.array([[1.5, -1.0], [-1.0, 1.5], [1.0, 1.0], [-1.2, -0.8]], np.float32)  # one per prompt


def prompt_text(targets=TARGETS):
    cond = {"emb": jnp.asarray(np.repeat(targets, K, axis=0))}   # (B, C): the prompt "names" its target
    uncond = {"emb": jnp.zeros((1, C), jnp.float32)}
    return cond, uncond


def reward_fn(z0, targets=TARGETS):
    """(P, K) reward: minus the distance of each sample to its prompt's target."""
    tgt = jnp.asarray(np.repeat(targets, K, axis=0))
    return -jnp.linalg.norm(z0 - tgt, axis=1).reshape(P, K)


def config(beta=0.004, clip_eps=1e-3):
    return GrpoConfig(noise_rule=RULE, clip_eps=clip_eps, beta=beta, cfg_scale=CFG)


_rollout_fn = make_rollout_fn(policy_fn, SIGMAS, RULE, cfg_scale=CFG)


def do_rollout(trainable, frozen, key, cond, uncond):
    x_init = jax.random.normal(jax.random.fold_in(key, 10_000), (B, C))
    return _rollout_fn(trainable, frozen, x_init, key, cond, uncond)


@pytest.fixture(scope="module")
def batch():
    trainable, frozen = init_params(0, b_scale=0.3)  # policy != reference
    cond, uncond = prompt_text()
    traj = do_rollout(trainable, frozen, jax.random.PRNGKey(0), cond, uncond)
    adv = group_advantages({"dist": reward_fn(traj.z0)}).reshape(B)
    return trainable, frozen, traj, adv, cond, uncond


@functools.lru_cache(maxsize=None)
def _jitted_loss(cfg):
    return jax.jit(lambda tr, fr, tj, a, c, u: grpo_loss(tr, fr, tj, a, c, u, policy_fn=policy_fn,
                                                         reference_fn=reference_fn, config=cfg))


def _loss(trainable, frozen, traj, adv, cond, uncond, cfg):
    return _jitted_loss(cfg)(trainable, frozen, traj, adv, cond, uncond)


@pytest.fixture(scope="module")
def full_grad(batch):
    """jax.grad of grpo_loss over the whole batch (every trained step at once)."""
    trainable, frozen, traj, adv, cond, uncond = batch
    return jax.jit(jax.grad(lambda tr: grpo_loss(tr, frozen, traj, adv, cond, uncond, policy_fn=policy_fn,
                                                    reference_fn=reference_fn, config=config())[0]))(trainable)


# One compiled update shared by several tests: SGD with momentum (its first update is exactly −lr·clipped grad, and
# it has an optimizer state to protect), 2 micro-batches, a clip that is active, EMA after every update.
LR = 0.5
CLIP_FRACTION = 0.1
OPT = optax.sgd(LR, momentum=0.9)


@pytest.fixture(scope="module")
def train_setup(batch, full_grad):
    trainable = batch[0]
    max_norm = CLIP_FRACTION * float(optax.tree.norm(full_grad))
    update = UpdateConfig(num_micro_batches=2, max_grad_norm=max_norm, ema=EmaConfig(0.9, 1))
    step = make_train_step(policy_fn, reference_fn, OPT, config(), update)
    state = init_train_state(trainable, OPT)
    return step, state, update


def test_first_inner_step_ratio_is_one_and_clip_is_inactive(batch):
    trainable, frozen, traj, adv, cond, uncond = batch
    loss, m = _loss(trainable, frozen, traj, adv, cond, uncond, config(clip_eps=1e-3))
    # Same parameters as at rollout: log p_θ == log p_old up to float32 rounding of a re-traced computation.
    assert abs(float(m["ratio_min"]) - 1) < 1e-5 and abs(float(m["ratio_max"]) - 1) < 1e-5
    assert float(m["clipfrac"]) == 0.0 and float(m["approx_kl"]) < 1e-10
    # ratio = 1 -> policy loss = −mean(A); the clipped objective equals the unclipped one (clip range ~ 1).
    np.testing.assert_allclose(float(m["policy_loss"]), -float(jnp.mean(adv)), atol=1e-5)
    loss_wide, _ = _loss(trainable, frozen, traj, adv, cond, uncond, config(clip_eps=0.999))
    np.testing.assert_allclose(float(loss), float(loss_wide), rtol=1e-6, atol=1e-7)
    assert float(m["kl"]) > 0  # lora_b != 0, so this policy differs from the reference


def test_kl_zero_at_reference_and_exact_otherwise(batch):
    _, frozen, traj, adv, cond, uncond = batch
    fresh, _ = init_params(0, b_scale=0.0)  # LoRA B = 0: the policy IS the reference
    _, m = _loss(fresh, frozen, traj, adv, cond, uncond, config())
    assert float(m["kl"]) == 0.0

    trainable = batch[0]
    _, m = _loss(trainable, frozen, traj, adv, cond, uncond, config())
    # KL by hand in numpy: mean over steps of mean_b mean_elem (μθ − μref)²/(2 g² h) with μθ − μref = Δ·(1 +
    # g²(1−σ)/(2σ))·(vθ − vref) and vθ − vref = CFG-combined LoRA delta.
    kls = []
    a, bm = np.asarray(trainable["lora_a"], np.float64), np.asarray(trainable["lora_b"], np.float64)
    for j in np.asarray(traj.train_steps):
        x = np.asarray(traj.latents[j], np.float64)
        t = np.full((B,), int(traj.timesteps[j]), np.float64)
        def phi(emb):
            return np.concatenate([x, emb, (t / 1000)[:, None], np.ones((B, 1))], axis=1)
        d_c = phi(np.asarray(cond["emb"], np.float64)) @ a @ bm
        d_u = phi(np.zeros((B, C))) @ a @ bm
        dv = d_u + CFG * (d_c - d_u)
        s, sn = float(traj.sigmas[j]), float(traj.sigmas[j + 1])
        g = RULE.scale * s
        dmu = (sn - s) * (1 + g**2 * (1 - s) / (2 * s)) * dv
        kls.append(np.mean(dmu**2 / (2 * g**2 * (s - sn))))
    np.testing.assert_allclose(float(m["kl"]), np.mean(kls), rtol=1e-4)


def test_clipped_surrogate_matches_numpy(batch):
    trainable, frozen, traj, _, cond, uncond = batch
    eps = 1e-3
    rng = np.random.default_rng(5)
    adv = jnp.asarray(rng.choice([-1.5, -0.3, 0.4, 2.0], size=B), jnp.float32)
    delta = rng.choice([-0.01, -0.0004, 0.0, 0.0004, 0.01], size=B)  # some ratios outside [1−ε, 1+ε]
    shifted = traj.replace(log_probs=traj.log_probs - jnp.asarray(delta, jnp.float32)[None, :])
    _, m = _loss(trainable, frozen, shifted, adv, cond, uncond, config(beta=0.0, clip_eps=eps))
    r = np.exp(delta)
    a = np.asarray(adv, np.float64)
    expected = np.mean(np.maximum(-a * r, -a * np.clip(r, 1 - eps, 1 + eps)))
    np.testing.assert_allclose(float(m["policy_loss"]), expected, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(float(m["clipfrac"]), np.mean(np.abs(r - 1) > eps), atol=1e-6)
    np.testing.assert_allclose(float(m["approx_kl"]), 0.5 * np.mean(delta**2), rtol=1e-3, atol=1e-9)


def test_accumulated_gradient_equals_full_gradient(batch, full_grad):
    trainable, frozen, traj, adv, cond, uncond = batch
    loss, acc, _ = jax.jit(lambda tr: accumulate_gradients(
        tr, frozen, traj, adv, cond, uncond, policy_fn=policy_fn, reference_fn=reference_fn, config=config(),
        num_micro_batches=4))(trainable)
    full_loss, _ = _loss(trainable, frozen, traj, adv, cond, uncond, config())
    np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5, atol=1e-7)
    for k in full_grad:
        np.testing.assert_allclose(acc[k], full_grad[k], rtol=1e-5, atol=1e-7)
    assert float(sum(jnp.sum(jnp.abs(g)) for g in full_grad.values())) > 0


def test_grad_norm_clip_and_update(batch, full_grad, train_setup):
    trainable, frozen, traj, adv, cond, uncond = batch
    step, state, update = train_setup
    new, m = step(state, frozen, traj, adv, cond, uncond, reward_fn(traj.z0))
    norm = float(optax.tree.norm(full_grad))
    np.testing.assert_allclose(float(m["grad_norm"]), norm, rtol=1e-5)  # 2 micro-batches == whole batch
    scale = update.max_grad_norm / (norm + 1e-6)
    assert scale < 0.2  # the clip is active
    for k in full_grad:
        np.testing.assert_allclose(new.params[k], trainable[k] - LR * scale * full_grad[k], rtol=1e-5, atol=1e-7)
    # EMA after update 0 (every = 1): decay 1/10 -> ema = params_old + 0.9·(params_new − params_old)
    for k in full_grad:
        np.testing.assert_allclose(new.ema_params[k], trainable[k] + 0.9 * (new.params[k] - trainable[k]),
                                   rtol=1e-5, atol=1e-7)
    assert int(new.step) == 1 and float(m["skipped"]) == 0.0


def test_nonfinite_guard_skips_update(batch, train_setup):
    trainable, frozen, traj, adv, cond, uncond = batch
    step, state, _ = train_setup
    rewards = reward_fn(traj.z0)
    bad_cases = {
        "nan_reward": dict(traj=traj, adv=adv, rewards=rewards.at[1, 2].set(jnp.nan), flag="nonfinite_inputs"),
        "nan_loss": dict(traj=traj.replace(latents=traj.latents.at[0, 3, 0].set(jnp.nan)), adv=adv,
                         rewards=rewards, flag="nonfinite_loss"),
        "inf_advantage": dict(traj=traj, adv=adv.at[0].set(jnp.inf), rewards=rewards, flag="nonfinite_inputs"),
    }
    for name, case in bad_cases.items():
        new, m = step(state, frozen, case["traj"], case["adv"], cond, uncond, case["rewards"])
        assert float(m["skipped"]) == 1.0 and float(m[case["flag"]]) == 1.0, name
        assert int(new.step) == 0 and int(new.num_skipped) == 1, name
        for tree_new, tree_old in ((new.params, state.params), (new.ema_params, state.ema_params),
                                   (new.opt_state, state.opt_state)):
            for a, b in zip(jax.tree.leaves(tree_new), jax.tree.leaves(tree_old)):
                np.testing.assert_array_equal(a, b, err_msg=name)
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(new))
    # The same state then takes a clean batch normally.
    new, m = step(state, frozen, traj, adv, cond, uncond, rewards)
    assert float(m["skipped"]) == 0.0 and int(new.step) == 1 and int(new.num_skipped) == 0
    assert float(jnp.max(jnp.abs(new.params["lora_b"] - state.params["lora_b"]))) > 0


def test_nonfinite_update_result_is_skipped(batch):
    """Finite inputs, loss and gradients, but a NaN learning rate: the new parameters would be NaN, so the update is
    skipped and the state (parameters, Adam moments, EMA) stays finite and unchanged."""
    trainable, frozen, traj, adv, cond, uncond = batch
    update = UpdateConfig(num_micro_batches=2, max_grad_norm=1e-3, ema=EmaConfig(max_decay=0.9, every=1))
    optimizer = optax.adamw(float("nan"))  # the factory rejects a NaN lr: build the chain by hand
    state = init_train_state(trainable, optimizer, ema=True)
    step = make_train_step(policy_fn, reference_fn, optimizer, config(), update)
    new, m = step(state, frozen, traj, adv, cond, uncond, reward_fn(traj.z0))
    assert float(m["skipped"]) == 1.0 and float(m["nonfinite_update"]) == 1.0
    assert float(m["nonfinite_loss"]) == float(m["nonfinite_grad"]) == float(m["nonfinite_inputs"]) == 0.0
    assert int(new.step) == 0 and int(new.num_skipped) == 1
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state, new.ema_params)),
                    jax.tree.leaves((state.params, state.opt_state, state.ema_params))):
        np.testing.assert_array_equal(a, b)


def test_ema_schedule():
    np.testing.assert_allclose(ema_decay(jnp.arange(4), 0.9), [1 / 10, 2 / 11, 3 / 12, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(ema_decay(100, 0.9), 0.9)
    cfg = EmaConfig(max_decay=0.9, every=3)
    ema = {"w": jnp.zeros(2)}
    ref = np.zeros(2)
    for s in range(9):
        p = np.full(2, float(s + 1))
        ema = ema_update(ema, {"w": jnp.asarray(p, jnp.float32)}, s, cfg)
        if (s + 1) % 3 == 0:
            d = min((1 + s) / (10 + s), 0.9)
            ref = ref + (1 - d) * (p - ref)
        np.testing.assert_allclose(ema["w"], ref, rtol=1e-6, err_msg=f"update {s}")
    with pytest.raises(ValueError, match="every"):
        EmaConfig(every=0)


def test_grpo_raises_reward():
    """GRPO on the toy: 40 updates (one per rollout of 4 prompts × 4 samples) bring the samples towards their
    prompt's target (mean distance ≈ 1.7 at the start; measured ≈ 0.4 after 40 updates)."""
    trainable, frozen = init_params(1, b_scale=0.0)
    cond, uncond = prompt_text()
    opt = optax.adamw(5e-2, weight_decay=0.0)
    step = make_train_step(policy_fn, reference_fn, opt, config(), UpdateConfig(max_grad_norm=1.0))
    state = init_train_state(trainable, opt)
    history = []
    for it in range(40):
        traj = do_rollout(state.params, frozen, jax.random.PRNGKey(100 + it), cond, uncond)
        rewards = reward_fn(traj.z0)
        history.append(float(jnp.mean(rewards)))
        adv = group_advantages({"dist": rewards}).reshape(B)
        state, m = step(state, frozen, traj, adv, cond, uncond, rewards)
        assert float(m["skipped"]) == 0.0
    first, last = np.mean(history[:5]), np.mean(history[-5:])
    assert last > first + 0.7, history
    assert int(state.step) == 40
    # The EMA (every 8 updates) has moved towards the trained adapter.
    assert float(jnp.max(jnp.abs(state.ema_params["lora_b"]))) > 0


def test_sharded_step_matches_single_device(batch, train_setup):
    trainable, frozen, traj, adv, cond, uncond = batch
    single, state, update = train_setup
    rewards = reward_fn(traj.z0)
    ref_state, ref_m = single(state, frozen, traj, adv, cond, uncond, rewards)

    mesh = make_mesh({"data": 2, "fsdp": 4})
    with jax.set_mesh(mesh):
        state_sh = replicated_sharding(state, mesh)
        frozen_sh = replicated_sharding(frozen, mesh)
        traj_sh = trajectory_sharding(traj, mesh)
        adv_sh = batch_leading_sharding(adv, mesh)
        cond_sh = batch_leading_sharding(cond, mesh)
        uncond_sh = replicated_sharding(uncond, mesh)
        assert tuple(traj_sh.latents.spec[:2]) == (None, ("data", "fsdp"))
        sharded = make_train_step(
            policy_fn, reference_fn, OPT, config(), update,
            in_shardings=(state_sh, frozen_sh, traj_sh, adv_sh, cond_sh, uncond_sh,
                          replicated_sharding(rewards, mesh)),
            out_shardings=(state_sh, NamedSharding(mesh, PartitionSpec())),
        )
        args = [jax.device_put(a, s) for a, s in ((state, state_sh), (frozen, frozen_sh), (traj, traj_sh),
                                                    (adv, adv_sh), (cond, cond_sh), (uncond, uncond_sh))]
        args.append(rewards)
        assert len(args[2].latents.sharding.device_set) == 8
        assert args[2].latents.addressable_shards[0].data.shape[1] == B // 8
        new_state, m = sharded(*args)
    for k in ("loss", "kl", "grad_norm", "policy_loss"):
        np.testing.assert_allclose(float(m[k]), float(ref_m[k]), rtol=1e-5, atol=1e-7, err_msg=k)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(ref_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(new_state.params["lora_b"] - trainable["lora_b"]))) > 1e-4  # it did move


def test_config_errors_are_clear(batch):
    trainable, frozen, traj, adv, cond, uncond = batch
    with pytest.raises(ValueError, match="reference_fn"):
        grpo_loss(trainable, frozen, traj, adv, cond, uncond, policy_fn=policy_fn, reference_fn=None,
                  config=config(beta=0.004))
    with pytest.raises(ValueError, match="clip_eps"):
        config(clip_eps=0.0)
    with pytest.raises(ValueError, match="beta"):
        config(beta=-1.0)
    with pytest.raises(TypeError, match="NoiseRule"):
        GrpoConfig(noise_rule="flow_grpo_wan")
    with pytest.raises(ValueError, match="must be \\(16,\\)"):
        grpo_loss(trainable, frozen, traj, adv[:3], cond, uncond, policy_fn=policy_fn, reference_fn=reference_fn,
                  config=config())
    with pytest.raises(ValueError, match="micro-batches"):
        accumulate_gradients(trainable, frozen, traj, adv, cond, uncond, policy_fn=policy_fn,
                             reference_fn=reference_fn, config=config(), num_micro_batches=3)


def test_fast_window_trains_only_the_window(batch):
    """Flow-GRPO-Fast: only the SDE window is trained; ODE steps (log-prob 0) would give ratios far from 1."""
    trainable, frozen, _, _, cond, uncond = batch
    fast = make_rollout_fn(policy_fn, SIGMAS, RULE, cfg_scale=CFG, sde_window_length=2)
    x_init = jax.random.normal(jax.random.PRNGKey(3), (B, C))
    traj = fast(trainable, frozen, x_init, jax.random.PRNGKey(4), cond, uncond, jnp.int32(1))
    np.testing.assert_array_equal(traj.train_steps, [1, 2])
    adv = group_advantages({"dist": reward_fn(traj.z0)}).reshape(B)
    _, m = _loss(trainable, frozen, traj, adv, cond, uncond, config())
    assert abs(float(m["ratio_min"]) - 1) < 1e-5 and abs(float(m["ratio_max"]) - 1) < 1e-5
    _, m_all = _loss(trainable, frozen, traj.replace(train_steps=jnp.arange(2, dtype=jnp.int32)), adv, cond, uncond,
                     config())
    assert float(m_all["clipfrac"]) > 0.4  # step 0 is an ODE step: training it would be wrong, and visibly so
    with pytest.raises(ValueError, match="window_start"):
        fast(trainable, frozen, x_init, jax.random.PRNGKey(4), cond, uncond)
