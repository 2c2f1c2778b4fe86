"""Ahead-of-time compilation of LGM-guided ODE sampling at real sizes, on abstract shapes (no weights anywhere).

    out = compile_guided_sampling(configs/wan21.py config, mesh, batch=8, num_steps=50)
    out["unguided"]["peak_gib"], out["guided_through_model"]["temp_gib"], out["guided_lgm_only"][...]

Three programs, each the whole N-step sampler as sampling runs it, with every parameter and input a ShapeDtypeStruct
at the sharding its logical axes ask for on `mesh` (so memory_analysis() is per device):

    unguided               the trainer's ODE sampler (CFG, N Euler steps)
    guided_through_model   GuidedSampler, guidance.through_model=True: at a guided step the CFG DiT forward, the LGM
                           rewards, and the backward through LGM and DiT to x_t
    guided_lgm_only        through_model=False: the DiT forward, the LGM rewards and the LGM backward to x̂0 only

The scan holds one step's activations whatever N is, and a guided step is a lax.cond branch, so these are the peaks of
one guided step, not of N of them.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vggrpo_jax.guidance import GuidedSampler
from vggrpo_jax.parallel import logical_sharding
from vggrpo_jax.policy import Policy
from vggrpo_jax.grpo.trainer import GRPOTrainer
from vggrpo_jax.grpo.aot import abstract_components, stats

BATCH_AXES = ("batch", None, None, None, None)


def guided_samplers(config: Any, mesh: Mesh, num_steps: int, policy: Policy, lgm_graphdef: Any,
                    lgm_state: Any) -> dict[str, GuidedSampler]:
    """The two guided samplers (through the DiT, LGM only), guiding every step."""
    out = {}
    for name, through in (("guided_through_model", True), ("guided_lgm_only", False)):
        c = copy.deepcopy(config)
        c.guidance.steps, c.guidance.through_model = "all", through
        out[name] = GuidedSampler(c, policy, lgm_graphdef, lgm_state, num_steps, mesh)
    return out


def abstract_inputs(config: Any, mesh: Mesh, batch: int, shape: tuple[int, ...], text_dim: int):
    """(cond, uncond, x_init) ShapeDtypeStructs: text and noise split over "batch", the negative prompt replicated."""
    length = int(config.text.max_length)

    def sds(shape_, axes):
        return jax.ShapeDtypeStruct(shape_, jnp.float32, sharding=logical_sharding(axes, mesh, shape=shape_))

    cond = sds((batch, length, text_dim), ("batch", None, None))
    uncond = jax.ShapeDtypeStruct((1, length, text_dim), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    x_init = sds((batch,) + tuple(shape), BATCH_AXES)
    return cond, uncond, x_init


def compile_guided_sampling(config: Any, mesh: Mesh, *, batch: int, num_steps: int,
                            stitch_layer: int = 12) -> dict[str, Any]:
    """Compiles the unguided and both guided samplers of `config` on `mesh`; {name: stats, "shapes": {...}}."""
    policy, lgm_graphdef, lgm_state, shape = abstract_components(config, mesh, stitch_layer)
    text_dim = policy.config.text_dim
    cond, uncond, x_init = abstract_inputs(config, mesh, batch, shape, text_dim)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, PartitionSpec()))
    out: dict[str, Any] = {}
    trainer = GRPOTrainer(config, policy, lgm_graphdef, lgm_state, shape, mesh)
    with jax.set_mesh(mesh):
        out["unguided"] = stats(trainer._sample.lower(policy.lora, policy.frozen, cond, uncond, key, num_steps)
                                .compile())
    for name, sampler in guided_samplers(config, mesh, num_steps, policy, lgm_graphdef, lgm_state).items():
        out[name] = stats(sampler.lower(policy.lora, cond, uncond, x_init, 1.0).compile())
    out["shapes"] = {"batch": batch, "latent": list(shape), "num_steps": num_steps,
                     "text_len": int(config.text.max_length)}
    return out
