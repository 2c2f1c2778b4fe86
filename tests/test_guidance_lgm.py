"""LGM guidance (vggrpo_jax/guidance.py) with the tiny toy models: reward gradients through the LGM, and the sampler
on the 8-device mesh.

The LGM is the tiny Any4D of configs/lgm_toy.py with an unfitted connector (a valid, smooth latents → geometry map).
r_motion is smooth in the latents, so its gradient must match central finite differences. r_geo is only piecewise
smooth (the z-buffer's pixel assignment and the confidence mask are piecewise constant: its finite differences at any
usable step are dominated by those jumps), so its gradient is checked through its linearisation at the geometry:
⟨∇_geometry r_geo, LGM(z)⟩ is smooth in z, and its finite differences must match the r_geo gradient through the LGM.
"""

import copy
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENT = (16, 3, 8, 8)  # the toy VAE's latents of 9 frames at 64×64


def _configs():
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    try:
        from lgm_toy import get_config as lgm_config  # noqa: PLC0415
        from toy_random import get_config as toy_config  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    return lgm_config(), toy_config()


@pytest.fixture(scope="module")
def lgm():
    from vggrpo_jax import backbones as build
    from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
    from vggrpo_jax.lgm.model import LatentGeometryModel

    lgm_c, toy_c = _configs()
    any4d = build.build_any4d(lgm_c)
    connector = build_connector(ConnectorConfig(), latent_channels=LATENT[0], any4d_config=any4d.config,
                                stitch_layer=2, seed=5)
    graphdef, state = nnx.split(LatentGeometryModel(connector, any4d))
    return graphdef, state, toy_c


def test_reward_gradients_through_the_lgm_are_finite_and_match_finite_differences(lgm):
    from vggrpo_jax.rewards import geometry_rewards

    graphdef, state, config = lgm

    def geometry(z):
        return nnx.merge(graphdef, state)(z)

    @jax.jit
    def gradients(z):
        geom, pullback = jax.vjp(geometry, z)
        out = {}
        for name in ("motion", "geo"):
            g_geom = jax.grad(lambda g: jnp.sum(geometry_rewards(g, config.rewards)[name]))(geom)
            out[name] = (pullback(g_geom)[0], g_geom)
        return out

    @jax.jit
    def probe(zs):
        geom = geometry(zs)
        return geometry_rewards(geom, config.rewards)["motion"], geom

    z = jax.random.normal(jax.random.key(0), (1,) + LATENT)
    grads = gradients(z)
    rand = jax.random.normal(jax.random.key(1), z.shape)
    rand = rand / jnp.linalg.norm(rand)
    for name in ("motion", "geo"):
        g = grads[name][0]
        assert np.all(np.isfinite(np.asarray(g))), name
        assert float(jnp.linalg.norm(g)) > 1e-4, name  # the reward does reach the latents

    h = 3e-3
    g_m, g_g = grads["motion"][0], grads["geo"][0]
    dirs = []
    for g in (g_m, g_g):
        unit = g / jnp.linalg.norm(g)
        mixed = unit + rand
        dirs += [unit, mixed / jnp.linalg.norm(mixed)]
    zs = jnp.concatenate([z + s * h * d for d in dirs for s in (1.0, -1.0)], axis=0)
    motion, geoms = probe(zs)
    motion = np.asarray(motion, np.float64)

    # r_motion: central differences along its gradient and along a generic direction.
    for k in range(2):
        fd = (motion[2 * k] - motion[2 * k + 1]) / (2 * h)
        exact = float(jnp.sum(g_m * dirs[k]))
        np.testing.assert_allclose(fd, exact, rtol=0.02)

    # r_geo: finite differences of the linearisation ⟨∇_geometry r_geo, LGM(z)⟩.
    cot = jax.tree.leaves(grads["geo"][1])
    leaves = jax.tree.leaves(geoms)
    for k in range(2, 4):
        lin = [sum(float(jnp.vdot(c[0], leaf[i])) for c, leaf in zip(cot, leaves)) for i in (2 * k, 2 * k + 1)]
        fd = (lin[0] - lin[1]) / (2 * h)
        exact = float(jnp.sum(g_g * dirs[k]))
        np.testing.assert_allclose(fd, exact, rtol=0.02)


def test_guided_sampler_at_scale_zero_is_the_unguided_wan_sampler_bit_for_bit(lgm):
    """The tiny Wan DiT with CFG and the LGM reward: scale 0 reproduces rl.ode_sample exactly; a positive scale
    changes the samples (r_motion guidance, so every sample has a finite reward)."""
    from vggrpo_jax import rl
    from vggrpo_jax.guidance import GuidedSampler
    from vggrpo_jax.policy import Policy, wan_config_from

    graphdef, state, config = lgm
    config = copy.deepcopy(config)
    config.guidance.weights.geo = 0.0
    config.guidance.steps = "1:"
    wcfg = wan_config_from(config, text_dim=32, in_channels=LATENT[0], out_channels=LATENT[0])
    policy = Policy.random(wcfg, seed=3, lora_seed=0)
    sampler = GuidedSampler(config, policy, graphdef, state, num_steps=3)
    cond = jax.random.normal(jax.random.key(5), (2, 16, 32))
    uncond = jnp.zeros((1, 16, 32))
    x_init = jax.random.normal(jax.random.key(6), (2,) + LATENT)
    plain = jax.jit(lambda lora, frozen: rl.ode_sample(
        lambda x, t, text: policy.velocity(lora, frozen, x, t, text), x_init, sampler.sigmas, cond={"emb": cond},
        uncond={"emb": uncond}, cfg_scale=float(config.rl.cfg_scale)))(policy.lora, policy.frozen)
    z0, trace = sampler.sample(policy.lora, cond, uncond, x_init, 0.0)
    np.testing.assert_array_equal(np.asarray(z0), np.asarray(plain))
    assert np.all(np.isnan(np.asarray(trace.reward)))
    z1, trace = sampler.sample(policy.lora, cond, uncond, x_init, 0.5)
    assert np.asarray(trace.skipped).sum() == 0 and np.all(np.isfinite(np.asarray(trace.reward)[1:]))
    assert float(jnp.abs(z1 - plain).mean()) > 1e-4
