"""DINOv2 ViT encoder (no registers) as Any4D uses it: final-LN patch tokens, CLS dropped.

Parameters mirror `encoder.model.*` of the released checkpoint: cls_token (1, 1, D), pos_embed (1, 1 + M², D),
patch_embed.proj (14×14 stride-14 conv), blocks.N (pre-norm, LayerScale), norm. The position table is bicubic-resampled
to the input's patch grid exactly like DINOv2's `interpolate_pos_encoding` (scale (n + 0.1)/M, no antialias), and used
as is when the grid is the table's own square grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.any4d.config import Any4DConfig
from vggrpo_jax.models.any4d.layers import Block, LayerNorm
from vggrpo_jax.models.any4d.resample import interpolate_pos_grid
from vggrpo_jax.models.any4d.sharding import shard_views


class PatchEmbed(nnx.Module):
    def __init__(self, patch: int, dim: int, *, param_dtype, rngs: nnx.Rngs):
        self.patch = patch
        self.proj = nnx.Conv(3, dim, (patch, patch), strides=(patch, patch), padding="VALID",
                             param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jax.Array, dtype) -> jax.Array:
        """images (V, H, W, 3) → patch tokens (V, h·w, D): the conv is a matmul over non-overlapping patches."""
        v, hh, ww, c = images.shape
        p = self.patch
        x = images.reshape(v, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(v, (hh // p) * (ww // p), p * p * c)
        kernel = self.proj.kernel[...].reshape(p * p * c, -1)
        return (jnp.dot(x.astype(dtype), kernel.astype(dtype)).astype(jnp.float32)
                + self.proj.bias[...].astype(jnp.float32))


class DinoV2(nnx.Module):
    def __init__(self, config: Any4DConfig, *, rngs: nnx.Rngs):
        d, pd = config.encoder_dim, config.param_dtype
        self.config = config
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, d), pd))
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1 + config.pos_grid**2, d), pd))
        self.patch_embed = PatchEmbed(config.patch_size, d, param_dtype=pd, rngs=rngs)
        self.blocks = nnx.List([
            Block(d, config.encoder_heads, config.encoder_mlp_ratio, layer_scale=True, eps=config.norm_eps,
                  dtype=config.dtype, param_dtype=pd, attention_impl=config.attention_impl, rngs=rngs)
            for _ in range(config.encoder_depth)
        ])
        self.norm = LayerNorm(d, config.norm_eps, param_dtype=pd)

    def position_table(self, grid: tuple[int, int]) -> jax.Array:
        """(1 + h·w, D) fp32: the CLS position and the patch positions resampled to `grid` (h, w)."""
        table = self.pos_embed[...][0].astype(jnp.float32)
        m = self.config.pos_grid
        if tuple(grid) == (m, m):
            return table
        patches = interpolate_pos_grid(table[1:].reshape(m, m, -1), grid)
        return jnp.concatenate([table[:1], patches.reshape(grid[0] * grid[1], -1)], 0)

    def __call__(self, images: jax.Array) -> jax.Array:
        """images (V, H, W, 3) ImageNet-normalised → final-LN patch tokens (V, T, D) fp32, T = (H/14)·(W/14)."""
        v, hh, ww, _ = images.shape
        p = self.config.patch_size
        grid = (hh // p, ww // p)
        x = self.patch_embed(images, self.config.dtype)
        cls = jnp.broadcast_to(self.cls_token[...].astype(jnp.float32), (v, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], 1) + self.position_table(grid)[None]
        x = shard_views(x)
        for block in self.blocks:
            x = block(x, constrain_tokens=shard_views)
        return self.norm(x)[:, 1:]
