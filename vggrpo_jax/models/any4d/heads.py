"""Pose head (uniception PoseHead) and metric-scale head (uniception MLPHead), fp32.

Pose: final trunk features (V, h, w, D) → 1×1 conv `proj` to 4·patch² → `res_conv` blocks (three 1×1 convs with ReLU,
identity skip) → global average → `more_mlps` [Linear, ReLU, Linear, ReLU] → fc_t (3) and fc_rot (4, xyzw).
Scale: the final-normed scale token (B, D) → `proj` (no activation) → `mlp` N×[Linear, ReLU] → `output_proj` (1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.any4d.dpt import conv


def _dense(din: int, dout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(din, dout, rngs=rngs)


class ResConvBlock(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.res_conv1 = conv(dim, dim, 1, rngs=rngs)
        self.res_conv2 = conv(dim, dim, 1, rngs=rngs)
        self.res_conv3 = conv(dim, dim, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.res_conv1(x))
        y = jax.nn.relu(self.res_conv2(y))
        return x + jax.nn.relu(self.res_conv3(y))


class PoseHead(nnx.Module):
    def __init__(self, in_dim: int, dim: int, num_blocks: int, *, rngs: nnx.Rngs):
        self.proj = conv(in_dim, dim, 1, rngs=rngs)
        self.res_conv = nnx.List([ResConvBlock(dim, rngs=rngs) for _ in range(num_blocks)])
        self.more_mlps = nnx.List([_dense(dim, dim, rngs=rngs), None, _dense(dim, dim, rngs=rngs), None])
        self.fc_t = _dense(dim, 3, rngs=rngs)
        self.fc_rot = _dense(dim, 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(V, h, w, D) → raw translation (V, 3), raw quaternion (V, 4)."""
        x = self.proj(x)
        for block in self.res_conv:
            x = block(x)
        x = jnp.mean(x, (1, 2))
        x = jax.nn.relu(self.more_mlps[0](x))
        x = jax.nn.relu(self.more_mlps[2](x))
        return self.fc_t(x), self.fc_rot(x)


class ScaleHead(nnx.Module):
    def __init__(self, in_dim: int, hidden: int, num_layers: int, *, rngs: nnx.Rngs):
        self.proj = _dense(in_dim, hidden, rngs=rngs)
        self.mlp = nnx.List([nnx.List([_dense(hidden, hidden, rngs=rngs)]) for _ in range(num_layers)])
        self.output_proj = _dense(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, D) → raw log-scale (B,)."""
        x = self.proj(x)
        for layer in self.mlp:
            x = jax.nn.relu(layer[0](x))
        return self.output_proj(x)[..., 0]
