"""The alternating-attention trunk (uniception MultiViewAlternatingAttentionTransformerIFR, images-only use).

Token layout, kept identical everywhere: (B, N·T + 1, D) = view 0's T patch tokens (row-major), view 1's, …, then
the single scale token. Block k even = GLOBAL attention over all N·T + 1 tokens; block k odd = FRAME attention within
each view, the scale token skipping the block unchanged. No positional encoding, no LayerScale.
Parameters mirror `info_sharing.*`: proj_embed, self_attention_blocks.N, norm. The checkpoint's `view_pos_table` is a
constant buffer (sinusoid at position 0 = [0, 1, 0, 1, …]); it is `reference_view_embedding` here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.models.any4d.config import Any4DConfig
from vggrpo_jax.models.any4d.layers import Block, LayerNorm, _linear
from vggrpo_jax.models.any4d.sharding import global_attention, shard_tokens, shard_views


def reference_view_embedding(dim: int) -> np.ndarray:
    """The sinusoid view table at position 0: sin(0) = 0 on even channels, cos(0) = 1 on odd ones."""
    table = np.zeros((dim,), np.float32)
    table[1::2] = 1.0
    return table


def is_global_block(k: int) -> bool:
    return k % 2 == 0


class AlternatingTrunk(nnx.Module):
    def __init__(self, config: Any4DConfig, *, rngs: nnx.Rngs):
        d, pd = config.trunk_dim, config.param_dtype
        self.config = config
        lora = (config.lora_rank, config.lora_alpha, tuple(config.lora_targets))
        # proj_embed has no adapter: it belongs to the part a latent connector replaces.
        self.proj_embed = _linear("proj_embed", config.encoder_dim, d, ("embed", "mlp"), dtype=config.dtype,
                                  param_dtype=pd, lora=(0, None, ()), rngs=rngs)
        self.self_attention_blocks = nnx.List([
            Block(d, config.trunk_heads, config.trunk_mlp_ratio, layer_scale=False, eps=config.norm_eps,
                  dtype=config.dtype, param_dtype=pd, lora=lora, attention_impl=config.attention_impl,
                  rngs=rngs)
            for _ in range(config.trunk_depth)
        ])
        self.norm = LayerNorm(d, config.norm_eps, param_dtype=pd)

    def embed(self, fused: jax.Array, scale_token: jax.Array) -> jax.Array:
        """fused (B, N, T, D_enc) fp32 and scale token (D_enc,) → tokens entering block 0 (B, N·T+1, D) fp32."""
        b, n, t, _ = fused.shape
        x = jnp.concatenate([fused.reshape(b, n * t, -1),
                             jnp.broadcast_to(scale_token.astype(jnp.float32), (b, 1, scale_token.shape[-1]))], 1)
        x = self.proj_embed(x.astype(self.config.dtype)).astype(jnp.float32)
        ref = jnp.asarray(reference_view_embedding(self.config.trunk_dim))
        x = x.at[:, :t].add(ref)
        return shard_tokens(x)

    def block(self, k: int, x: jax.Array, num_views: int) -> jax.Array:
        """Applies block k to the residual stream x (B, N·T+1, D)."""
        blk = self.self_attention_blocks[k]
        if is_global_block(k):
            attend = functools.partial(global_attention, kind=self.config.global_attention)
            return blk(x, attention_fn=attend, constrain_tokens=shard_tokens)
        b, length, d = x.shape
        t = (length - 1) // num_views
        views = x[:, :-1].reshape(b * num_views, t, d)
        views = blk(shard_views(views), constrain_tokens=shard_views)
        return shard_tokens(jnp.concatenate([views.reshape(b, num_views * t, d), x[:, -1:]], 1))

    def run(self, x: jax.Array, start: int, stop: int, num_views: int) -> tuple[jax.Array, dict[int, jax.Array]]:
        """Blocks [start, stop) → (raw stream after block stop−1, {tap k: norm(x) view tokens (B, N, T, D)})."""
        taps = {}
        b, length, d = x.shape
        for k in range(start, stop):
            x = self.block(k, x, num_views)
            if k in self.config.tap_layers:
                taps[k] = self.norm(x[:, :-1]).reshape(b, num_views, (length - 1) // num_views, d)
        return x, taps
