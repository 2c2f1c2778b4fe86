"""Ahead-of-time compilation of one full GRPO iteration at real sizes, on abstract shapes (no weights anywhere).

    stats = compile_grpo_iteration(configs/wan21.py config, mesh)
    stats["rollout"]["temp_gib"], stats["update"]["flops"], ...

Compiles the trainer's three jitted stages exactly as training runs them (trainer.GRPOTrainer): the N-step SDE
rollout of P prompts × K samples with CFG, the LGM rewards (connector + Any4D tail + heads + both rewards), and the
GRPO update over the trained steps (forward of policy and reference, backward through the LoRA policy, AdamW, EMA).
Every parameter and input is a ShapeDtypeStruct carrying the sharding its logical axes ask for on `mesh`, so
memory_analysis() is per device, as a real run would see it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vggrpo_jax import rl
from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
from vggrpo_jax.lgm.model import LatentGeometryModel
from vggrpo_jax.models.any4d import Any4D, Any4DConfig
from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.models.wan.vae_config import WanVAEConfig
from vggrpo_jax.parallel import abstract_placed, logical_sharding
from vggrpo_jax.policy import Policy, wan_config_from
from vggrpo_jax.grpo.trainer import GRPOTrainer, latent_shape

GIB = 1024**3


def stats(compiled: Any) -> dict[str, float]:
    """Per-device memory (GiB) and FLOPs of a compiled executable."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out = {
        "argument_gib": mem.argument_size_in_bytes / GIB,
        "output_gib": mem.output_size_in_bytes / GIB,
        "temp_gib": mem.temp_size_in_bytes / GIB,
        "alias_gib": mem.alias_size_in_bytes / GIB,
        "flops": float(cost.get("flops", 0.0)) if cost else 0.0,
    }
    out["peak_gib"] = out["argument_gib"] + out["output_gib"] + out["temp_gib"] - out["alias_gib"]
    return out


def abstract_lgm(any4d_config: Any4DConfig, connector: ConnectorConfig, latent_channels: int, stitch_layer: int,
                 mesh: Mesh) -> tuple[Any, Any]:
    """(graphdef, abstract placed state) of an LGM: full Any4D tail + connector at `stitch_layer`."""

    def make():
        any4d = Any4D(any4d_config, rngs=nnx.Rngs(0))
        conn = build_connector(connector, latent_channels=latent_channels, any4d_config=any4d_config,
                               stitch_layer=stitch_layer)
        return LatentGeometryModel(conn, any4d)

    graphdef, state = nnx.split(nnx.eval_shape(make))
    return graphdef, abstract_placed(state, mesh)


def abstract_components(config: Any, mesh: Mesh, stitch_layer: int, text_dim: int | None = None,
                        latent_channels: int | None = None):
    """(policy, lgm_graphdef, lgm_state, latent shape) of `config` as placed abstract shapes on `mesh`."""
    c = config
    vae_cfg = getattr(WanVAEConfig, c.vae.preset)()
    overrides = {}
    if text_dim is not None:
        overrides["text_dim"] = text_dim
    if latent_channels is not None:
        overrides.update(in_channels=latent_channels, out_channels=latent_channels)
    wcfg = wan_config_from(c, **overrides)
    shape = latent_shape(c, vae_cfg, wcfg.in_channels)
    graphdef, lora, frozen = nnx.split(nnx.eval_shape(lambda: WanTransformer(wcfg, nnx.Rngs(0))), LoRAParam, ...)
    policy = Policy(wcfg, graphdef, abstract_placed(lora, mesh), abstract_placed(frozen, mesh))
    any4d_cfg = (Any4DConfig.full if c.any4d.preset == "full" else Any4DConfig.tiny)(
        dtype=jnp.dtype(c.any4d.dtype), lora_rank=int(c.any4d.lora_rank), lora_alpha=float(c.any4d.lora_alpha))
    lgm_graphdef, lgm_state = abstract_lgm(any4d_cfg, ConnectorConfig(), shape[0], stitch_layer, mesh)
    return policy, lgm_graphdef, lgm_state, shape


def compile_grpo_iteration(config: Any, mesh: Mesh, stitch_layer: int = 12) -> dict[str, dict[str, float]]:
    """Compiles rollout, rewards and update of `config` (a training ConfigDict, e.g. configs/wan21.py) on `mesh`.

    Returns {"rollout": stats, "rewards": stats, "update": stats, "shapes": {...}}.
    """
    c = config
    policy, lgm_graphdef, lgm_state, shape = abstract_components(c, mesh, stitch_layer)
    trainer = GRPOTrainer(c, policy, lgm_graphdef, lgm_state, shape, mesh)

    batch = int(c.rl.prompts_per_batch) * int(c.rl.group_size)
    length = int(c.text.max_length)

    def sds(shape_, axes, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape_, dtype, sharding=logical_sharding(axes, mesh, shape=shape_))

    cond = sds((batch, length, policy.config.text_dim), ("batch", None, None))
    uncond = jax.ShapeDtypeStruct((1, length, policy.config.text_dim), jnp.float32,
                                  sharding=NamedSharding(mesh, PartitionSpec()))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, PartitionSpec()))
    out: dict[str, Any] = {}
    with jax.set_mesh(mesh):
        # The train state at the shardings the trainer gives it (Adam moments and EMA like the adapters).
        state = jax.eval_shape(lambda lora_: rl.init_train_state(lora_, trainer.optimizer), policy.lora)
        state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), state,
                             trainer.state_shardings)
        rollout = trainer._rollout.lower(policy.lora, policy.frozen, cond, uncond, key).compile()
        out["rollout"] = stats(rollout)
        traj = jax.eval_shape(trainer._rollout, policy.lora, policy.frozen, cond, uncond, key)
        traj = jax.tree.map(lambda a: sds(a.shape, (None, "batch") + (None,) * (a.ndim - 2), a.dtype)
                            if a.ndim >= 2 else jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                     sharding=NamedSharding(mesh, PartitionSpec())),
                            traj)
        z0 = sds((batch,) + tuple(shape), ("batch", None, None, None, None))
        out["rewards"] = stats(trainer._rewards.lower(trainer.lgm_state, z0).compile())
        adv = sds((batch,), ("batch",))
        raw = sds((batch, 2), ("batch", None))
        update = trainer._train_step.lower(state, policy.frozen, traj, adv, {"emb": cond}, {"emb": uncond}, raw)
        out["update"] = stats(update.compile())
    out["shapes"] = {"batch": batch, "latent": list(shape), "text_len": length, "num_steps": int(c.rl.num_steps),
                     "trained_steps": int(traj.train_steps.shape[0])}
    return out

