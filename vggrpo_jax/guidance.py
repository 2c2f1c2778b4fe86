"""Test-time LGM guidance of ODE sampling: the config's `guidance` section, the LGM reward, and a jitted sampler.

    r(z) = w_motion·r_motion(LGM(z)) + w_geo·r_geo(LGM(z))           (rewards as in GRPO: trainer.geometry_rewards)
    ṽ    = v − scale·g(σ)·clip(∇_x r(x − σ·v(x)))  at the steps of guidance.steps    (rl/reward_guidance.py)

The sampler is one jitted program per (step count, options) whose guidance scale is an argument, so a sweep over
scales compiles once, and scale 0 reproduces the unguided sample bit for bit. Under a mesh it follows the placement
of its inputs like the trainer's sampling: adapters and frozen base weights where `Policy` put them, the LGM state
where `place_state` put it, and every batch-dim array (text, noise, samples) split over the "batch" logical axis.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vggrpo_jax import rl
from vggrpo_jax.config import validate_guidance
from vggrpo_jax.parallel import constrain
from vggrpo_jax.policy import Policy
from vggrpo_jax.rl.reward_guidance import (GuidanceOptions, GuidanceTrace, RewardFn, parse_steps,
                                           reward_guided_ode_sample)
from vggrpo_jax.trainer import geometry_rewards

REWARD_NAMES = ("motion", "geo")


@dataclasses.dataclass(frozen=True)
class GuidanceSpec:
    """config.guidance resolved for a sampler of `num_steps` steps: scale, static options, reward weights."""

    scale: float
    options: GuidanceOptions
    weights: tuple[tuple[str, float], ...]  # (("motion", w), ("geo", w)), hashable


def guidance_spec(config: Any, num_steps: int) -> GuidanceSpec:
    """Validates config.guidance against a `num_steps`-step sampler (errors name the key) and resolves it."""
    validate_guidance(config, num_steps)
    g = config.guidance
    options = GuidanceOptions(steps=parse_steps(g.steps, num_steps), schedule=str(g.schedule), clip=float(g.clip),
                              through_model=bool(g.through_model))
    weights = tuple((n, float(g.weights[n])) for n in REWARD_NAMES if n in g.weights)
    return GuidanceSpec(scale=float(g.scale), options=options, weights=weights)


def lgm_reward(lgm_graphdef: Any, lgm_state: Any, reward_config: Any,
               weights: tuple[tuple[str, float], ...]) -> RewardFn:
    """z (B, C, F', H', W') normalised latents → (B,) Σ_n w_n·r_n(LGM(z)), differentiable in z.

    r_geo may be −inf for a sample (a view without valid pixels): the sampler skips that sample's correction.
    """
    def reward(z: jax.Array) -> jax.Array:
        lgm = nnx.merge(lgm_graphdef, lgm_state)
        r = geometry_rewards(lgm(z), reward_config)
        terms = [w * r[name] for name, w in weights if w]
        return sum(terms[1:], terms[0])  # the rewards' dtype (float32; float64 in the gradient tests)

    return reward


class GuidedSampler:
    """ODE samples of a Wan policy with (optional) LGM guidance.

    sample(lora, cond (B, L, D), uncond (1, L, D), x_init (B, C, F', H', W'), scale) → (z0, GuidanceTrace)
    with B split over the mesh's batch axes (B must divide evenly: pad the prompt list).
    """

    def __init__(self, config: Any, policy: Policy, lgm_graphdef: Any, lgm_state: Any, num_steps: int,
                 mesh: Mesh | None = None, spec: GuidanceSpec | None = None):
        self.config, self.policy, self.mesh = config, policy, mesh
        self.lgm_graphdef, self.lgm_state = lgm_graphdef, lgm_state
        self.num_steps = int(num_steps)
        self.spec = guidance_spec(config, self.num_steps) if spec is None else spec
        self.sigmas = rl.wan_sigmas(self.num_steps, float(config.rl.shift), np.float64)  # as the trainer samples
        self._sample = jax.jit(self._impl)

    def _impl(self, lora, frozen, lgm_state, cond, uncond, x_init, scale):
        x_init = constrain(x_init.astype(jnp.float32), ("batch", None, None, None, None))
        velocity = lambda x, t, text: self.policy.velocity(lora, frozen, x, t, text)  # noqa: E731
        reward = lgm_reward(self.lgm_graphdef, lgm_state, self.config.rewards, self.spec.weights)
        z0, trace = reward_guided_ode_sample(
            velocity, reward, x_init, self.sigmas, scale, self.spec.options, cond={"emb": cond},
            uncond={"emb": uncond}, cfg_scale=float(self.config.rl.cfg_scale))
        return constrain(z0, ("batch", None, None, None, None)), trace

    def lower(self, lora, cond, uncond, x_init, scale=0.0):
        """The jitted program lowered on (possibly abstract) arguments: for AOT memory and sharding checks."""
        with _maybe_mesh(self.mesh):
            return self._sample.lower(lora, self.policy.frozen, self.lgm_state, cond, uncond, x_init,
                                      jnp.asarray(scale, jnp.float32))

    def sample(self, lora: Any, cond: jax.Array, uncond: jax.Array, x_init: jax.Array,
               scale: float | None = None) -> tuple[jax.Array, GuidanceTrace]:
        """z0 (B, C, F', H', W') and the guidance trace; scale defaults to config.guidance.scale."""
        scale = self.spec.scale if scale is None else float(scale)
        if scale < 0:
            raise ValueError(f"guidance scale must be ≥ 0, got {scale}")
        with _maybe_mesh(self.mesh):
            return self._sample(lora, self.policy.frozen, self.lgm_state, cond, uncond, x_init,
                                jnp.asarray(scale, jnp.float32))


def _maybe_mesh(mesh: Mesh | None):
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
