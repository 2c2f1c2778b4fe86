"""Ahead-of-time compilation of the DiT's LoRA training step on abstract shapes (no weights, no device memory).

    compiled = compile_lora_step(WanConfig.wan21_1_3b(...), mesh, batch=8, latent=(16, 21, 60, 104), text_len=512)
    compiled.memory_analysis(), compiled.cost_analysis()

The step is forward + backward of a mean-squared error on the velocity, differentiated w.r.t. the LoRA pytree only
(the GRPO update's shape). Parameters and inputs are ShapeDtypeStructs carrying the shardings their logical axes ask
for on `mesh`, so the numbers are per device, as a real run would see them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.parallel import abstract_state_shardings, logical_sharding


def _abstract(state: nnx.State, shardings: nnx.State) -> nnx.State:
    def one(var, sharding):
        value = var.get_value()
        return var.replace(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding))

    return jax.tree.map(one, state, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))


def lora_step_fn(graphdef):
    """(lora, base, x, t, text, target) -> (loss, grads w.r.t. lora)."""

    def loss_fn(lora, base, x, t, text, target):
        out = nnx.merge(graphdef, lora, base)(x, t, text)
        return jnp.mean(jnp.square(out - target))

    return jax.value_and_grad(loss_fn)


def compile_lora_step(
    config: WanConfig, mesh: Mesh, batch: int, latent: tuple[int, int, int, int], text_len: int = 512,
    per_token_timesteps: bool = False, compiler_options: dict | None = None,
) -> Any:
    """Lowers and compiles the LoRA step for latents (batch, C, F, H, W) on `mesh`; returns the Compiled object."""
    abstract = nnx.eval_shape(lambda: WanTransformer(config, nnx.Rngs(0)))
    graphdef, lora, base = nnx.split(abstract, LoRAParam, ...)
    lora_shardings = abstract_state_shardings(lora, mesh)
    lora = _abstract(lora, lora_shardings)
    base = _abstract(base, abstract_state_shardings(base, mesh))
    c, f, h, w = latent
    pt, ph, pw = config.patch_size
    tokens = (f // pt) * (h // ph) * (w // pw)

    def sds(shape, axes, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=logical_sharding(axes, mesh, shape=shape))

    x = sds((batch, c, f, h, w), ("batch", None, None, None, None))
    t = sds((batch, tokens), ("batch", "length")) if per_token_timesteps else sds((batch,), ("batch",))
    text = sds((batch, text_len, config.text_dim), ("batch", None, None))
    with jax.set_mesh(mesh):
        # Gradients come out sharded like the LoRA parameters (what the optimizer update consumes).
        step = jax.jit(lora_step_fn(graphdef), out_shardings=(NamedSharding(mesh, jax.P()), lora_shardings))
        return step.lower(lora, base, x, t, text, x).compile(compiler_options)


def analytic_flops(config: WanConfig, batch: int, latent: tuple[int, int, int, int], text_len: int = 512) -> dict:
    """Matmul FLOPs of one forward (2·MAC), for sanity checks of cost_analysis."""
    c, f, h, w = latent
    pt, ph, pw = config.patch_size
    n = (f // pt) * (h // ph) * (w // pw)
    d, ffn, layers = config.dim, config.ffn_dim, config.num_layers
    per_layer = (
        2 * n * d * d * 4  # self-attention q, k, v, o
        + 2 * n * d * d * 2 + 2 * text_len * d * d * 2  # cross-attention q, o and k, v
        + 2 * n * d * ffn * 2  # FFN
        + 2 * 2 * n * n * d  # self-attention logits and weighted sum
        + 2 * 2 * n * text_len * d  # cross-attention
    )
    embed = 2 * n * c * math.prod(config.patch_size) * d * 2 + 2 * text_len * config.text_dim * d
    projections = 2 * n * d * (6 * d + 2 * ffn)  # per layer, without attention itself
    return {"forward": batch * (layers * per_layer + embed), "projections_per_layer": batch * projections, "tokens": n}
