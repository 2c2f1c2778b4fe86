"""The policy being post-trained: a Wan DiT whose LoRA adapters are the only trainable parameters.

The model is kept split, never as one module object inside jitted code:

    graphdef                      static structure
    lora   (nnx.State)            LoRAParam leaves, fp32, trainable (optimizer, EMA, checkpoints)
    frozen (nnx.State)            every other parameter (bf16 base weights), FSDP-sharded, never updated

`velocity(lora, frozen, x, t, text)` is the policy network and `reference_velocity(...)` the same weights with the
adapters switched off (Flow-GRPO's reference policy for the KL term). Both have the `PolicyFn` signature of rl/grpo.py.
Text conditioning is a dict {"emb": (B, L, text_dim)} of zero-padded UMT5 embeddings (Wan T2V uses no text mask).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vggrpo_jax.checkpoint import restore_params
from vggrpo_jax.models.lora import LoRAParam, lora_disabled
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.parallel import abstract_state_shardings

BASE = nnx.All(nnx.Param, nnx.Not(LoRAParam))


def wan_config_from(config: Any, **overrides: Any) -> WanConfig:
    """WanConfig from the training config's `dit` and `lora` sections (+ architecture overrides for toy runs)."""
    return WanConfig.preset(
        config.dit.preset,
        dtype=config.dit.dtype,
        param_dtype=config.dit.param_dtype,
        scan_layers=config.dit.scan_layers,
        remat_policy=config.dit.remat_policy,
        attention=config.dit.attention,
        lora_rank=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_targets=tuple(config.lora.targets),
        **overrides,
    )


@dataclasses.dataclass
class Policy:
    """A split Wan DiT with LoRA. Build with `Policy.load` (checkpoint) or `Policy.random` (toy / tests)."""

    config: WanConfig
    graphdef: Any
    lora: nnx.State
    frozen: nnx.State

    # ---------------------------------------------------------------------------------------------- building
    @staticmethod
    def _abstract(config: WanConfig, mesh: Mesh | None):
        abstract = nnx.eval_shape(lambda: WanTransformer(config, nnx.Rngs(0)))
        graphdef, lora, frozen = nnx.split(abstract, LoRAParam, ...)
        shard = None
        if mesh is not None:
            shard = (abstract_state_shardings(lora, mesh), abstract_state_shardings(frozen, mesh))
        return graphdef, lora, frozen, shard

    @staticmethod
    def _init(config: WanConfig, seed: int, which: Any, shardings: Any) -> nnx.State:
        """Random init of one part, compiled so that each array is created at its sharding (XLA drops the rest)."""

        def init():
            return nnx.state(WanTransformer(config, nnx.Rngs(seed)), which)

        return jax.jit(init, out_shardings=shardings)() if shardings is not None else init()

    @classmethod
    def random(cls, config: WanConfig, seed: int, mesh: Mesh | None = None, lora_seed: int | None = None) -> "Policy":
        """All weights random (seeded): toy runs and tests. LoRA B starts at zero as always."""
        if config.lora_rank < 1:
            raise ValueError("Policy needs LoRA adapters: set lora.rank ≥ 1")
        graphdef, _, _, shard = cls._abstract(config, mesh)
        lora = cls._init(config, seed if lora_seed is None else lora_seed, LoRAParam, shard and shard[0])
        frozen = cls._init(config, seed, BASE, shard and shard[1])
        return cls(config, graphdef, lora, frozen)

    @classmethod
    def load(cls, config: WanConfig, checkpoint: str, lora_seed: int, mesh: Mesh | None = None) -> "Policy":
        """Base weights from an orbax dir written by tools/convert_wan.py (read at their shardings); fresh adapters."""
        if config.lora_rank < 1:
            raise ValueError("Policy needs LoRA adapters: set lora.rank ≥ 1")
        graphdef, _, abs_frozen, shard = cls._abstract(config, mesh)
        frozen = restore_params(checkpoint, abs_frozen, shard and shard[1])
        lora = cls._init(config, lora_seed, LoRAParam, shard and shard[0])
        return cls(config, graphdef, lora, frozen)

    @classmethod
    def load_shipped(cls, config: WanConfig, directory: str, lora_seed: int, mesh: Mesh | None = None) -> "Policy":
        """Base weights from a shipped directory (model.safetensors + manifest, sft/export.py: the toy zoo's DiT),
        sha256- and layout-checked, placed at their shardings; fresh adapters."""
        from vggrpo_jax.shipped import load_state, read_manifest  # noqa: PLC0415

        if config.lora_rank < 1:
            raise ValueError("Policy needs LoRA adapters: set lora.rank ≥ 1")
        graphdef, _, abs_frozen, shard = cls._abstract(config, mesh)
        frozen = load_state(directory, abs_frozen, read_manifest(directory, "vggrpo_dit/1"))
        frozen = jax.tree.map(lambda x, a: x.astype(a.dtype), frozen, abs_frozen)
        if shard is not None:
            frozen = jax.device_put(frozen, shard[1])
        lora = cls._init(config, lora_seed, LoRAParam, shard and shard[0])
        return cls(config, graphdef, lora, frozen)

    # ---------------------------------------------------------------------------------------------- calling
    def velocity(self, lora: Any, frozen: Any, x: jax.Array, t: jax.Array, text: dict) -> jax.Array:
        """v_θ(x (B, C, F, H, W), t (B,) int32, text {"emb": (B, L, D)}) → (B, C, F, H, W) fp32."""
        model = nnx.merge(self.graphdef, lora, frozen)
        return model(x, t, text["emb"])

    def reference_velocity(self, lora: Any, frozen: Any, x: jax.Array, t: jax.Array, text: dict) -> jax.Array:
        """The base model's velocity: same weights, adapters off."""
        model = nnx.merge(self.graphdef, jax.lax.stop_gradient(lora), frozen)
        with lora_disabled(model):
            return model(x, t, text["emb"])

    def num_params(self) -> tuple[int, int]:
        """(trainable, frozen) parameter counts."""
        count = lambda s: sum(int(jnp.size(x)) for x in jax.tree.leaves(s))  # noqa: E731
        return count(self.lora), count(self.frozen)
