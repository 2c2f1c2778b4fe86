"""Wan models: the DiT (transformer), its config, RoPE and attention dispatch."""

from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer

__all__ = ["WanConfig", "WanTransformer"]
