"""Pre-norm ViT blocks shared by the DINOv2 encoder and the alternating-attention trunk.

Parameter names follow the PyTorch modules (norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma) so the converter is a name-for-name table. Tokens are (batch, length, dim), channels-last.
Precision: LayerNorm statistics, the softmax and the residual stream are fp32; the matmuls run in `dtype`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.lora import LoRALinear, matches_targets


class LayerNorm(nnx.Module):
    """LayerNorm over the last dim computed in fp32; `scale`/`bias` named like the converter expects."""

    def __init__(self, dim: int, eps: float = 1e-6, *, param_dtype: Any = jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class LayerScale(nnx.Module):
    def __init__(self, dim: int, *, param_dtype: Any = jnp.float32):
        self.gamma = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


def _linear(name, din, dout, axes, *, dtype, param_dtype, lora, rngs) -> LoRALinear:
    rank, alpha, targets = lora
    use = rank > 0 and matches_targets(name, targets)
    return LoRALinear(din, dout, rank=rank if use else 0, alpha=alpha, kernel_axes=axes, dtype=dtype,
                      param_dtype=param_dtype, rngs=rngs)


AttentionFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str | None = None) -> jax.Array:
    """(B, L, H, Dh) each → (B, L, H, Dh): softmax(q·kᵀ/√Dh)·v; implementation="cudnn" is the fused GPU kernel."""
    return jax.nn.dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, implementation=implementation)


class Attention(nnx.Module):
    def __init__(self, dim: int, heads: int, *, dtype, param_dtype, lora=(0, None, ()), impl: str | None = None,
                 rngs: nnx.Rngs):
        self.heads = heads
        self.impl = impl
        self.qkv = _linear("attn.qkv", dim, 3 * dim, ("embed", "heads"), dtype=dtype, param_dtype=param_dtype,
                           lora=lora, rngs=rngs)
        self.proj = _linear("attn.proj", dim, dim, ("heads", "embed"), dtype=dtype, param_dtype=param_dtype,
                            lora=lora, rngs=rngs)

    def __call__(self, x: jax.Array, attention_fn: AttentionFn | None = None,
                 constrain_tokens: Callable[[jax.Array], jax.Array] = lambda t: t) -> jax.Array:
        b, n, d = x.shape
        if attention_fn is None:
            attention_fn = functools.partial(dot_product_attention, implementation=self.impl)
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = constrain_tokens(q)
        out = attention_fn(q, k, v).reshape(b, n, d)
        return self.proj(out)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, lora=(0, None, ()), rngs: nnx.Rngs):
        self.fc1 = _linear("mlp.fc1", dim, hidden, ("embed", "mlp"), dtype=dtype, param_dtype=param_dtype,
                           lora=lora, rngs=rngs)
        self.fc2 = _linear("mlp.fc2", hidden, dim, ("mlp", "embed"), dtype=dtype, param_dtype=param_dtype,
                           lora=lora, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); LayerScale only where the reference has it."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, layer_scale: bool, eps: float, dtype,
                 param_dtype, lora=(0, None, ()), attention_impl: str | None = None, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm1 = LayerNorm(dim, eps, param_dtype=param_dtype)
        self.attn = Attention(dim, heads, dtype=dtype, param_dtype=param_dtype, lora=lora, impl=attention_impl,
                              rngs=rngs)
        self.ls1 = LayerScale(dim, param_dtype=param_dtype) if layer_scale else None
        self.norm2 = LayerNorm(dim, eps, param_dtype=param_dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, param_dtype=param_dtype, lora=lora, rngs=rngs)
        self.ls2 = LayerScale(dim, param_dtype=param_dtype) if layer_scale else None

    def __call__(self, x: jax.Array, attention_fn: AttentionFn | None = None,
                 constrain_tokens: Callable[[jax.Array], jax.Array] = lambda t: t) -> jax.Array:
        """x (B, L, D) fp32 residual stream → same."""
        h = self.attn(self.norm1(x).astype(self.dtype), attention_fn, constrain_tokens).astype(jnp.float32)
        if self.ls1 is not None:
            h = self.ls1(h)
        x = constrain_tokens(x + h)
        h = self.mlp(self.norm2(x).astype(self.dtype)).astype(jnp.float32)
        if self.ls2 is not None:
            h = self.ls2(h)
        return constrain_tokens(x + h)
