"""UMT5 text encoder (the Wan text encoder, UMT5-XXL), in Flax NNX.

Matches transformers' `UMT5EncoderModel` (and the original Wan `T5Encoder`, which is the same network):

  ids (B, L) ─► token embedding ─► [block × num_layers] ─► RMSNorm ─► (B, L, D)
  block:  x += SelfAttention(RMSNorm(x), mask, per-layer relative position bias)
          x += wo( gelu_tanh(wi_0 · RMSNorm(x)) ⊙ (wi_1 · RMSNorm(x)) )

Conventions, each one a difference from a textbook transformer that a port easily gets wrong:
- UMT5 (unlike T5) has a relative-attention-bias table in EVERY layer: (num_buckets, heads) per block.
- Attention logits are NOT scaled by 1/sqrt(d_kv) (T5 folds the scale into the initialisation).
- RMSNorm = T5LayerNorm: no mean subtraction, no bias, variance in fp32, eps 1e-6.
- FFN = gated GELU with the tanh approximation ("gelu_new"): wi_0 is the gated (activated) branch, wi_1 the linear one.
- Relative positions are bucketed bidirectionally (half the buckets for keys after the query), half of each side
  exact, the rest logarithmic up to max_distance.
- The attention mask only masks KEYS; padded query positions are still computed (callers trim them away).

Numerics: the residual stream, norms, position bias, softmax and the output stay fp32; `dtype` (default fp32, bf16 for
the 5.7B model) is the matmul input dtype; `param_dtype` is the storage dtype of the weights.

Parameters carry logical axis names (vocab, embed, heads, kv, mlp, layers, norm). The blocks are stacked along a
leading "layers" axis and run with lax.scan, so compile time does not grow with depth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.parallel import constrain

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """Encoder hyper-parameters; field names follow transformers' UMT5Config."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    dtype: Any = jnp.float32  # matmul input dtype
    param_dtype: Any = jnp.float32  # weight storage dtype

    def __post_init__(self):
        if self.feed_forward_proj != "gated-gelu":
            raise ValueError(
                f"UMT5Config.feed_forward_proj={self.feed_forward_proj!r}: only 'gated-gelu' (the UMT5 FFN) is supported"
            )
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"UMT5Config.{name} must be positive, got {getattr(self, name)}")
        if self.relative_attention_num_buckets < 4 or self.relative_attention_num_buckets % 4:
            raise ValueError(
                "UMT5Config.relative_attention_num_buckets must be a positive multiple of 4 "
                f"(bidirectional, half exact), got {self.relative_attention_num_buckets}"
            )

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], **overrides: Any) -> "UMT5Config":
        """From a transformers UMT5/T5 config.json dict (extra keys such as architectures are ignored).

        Raises ValueError for a decoder config or an FFN other than gated-gelu.
        """
        if config.get("is_decoder", False):
            raise ValueError("UMT5Config.from_hf_config: got a decoder config (is_decoder=True); this is the encoder")
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name in ("dtype", "param_dtype"):
                continue
            if field.name in config:
                kwargs[field.name] = config[field.name]
        kwargs.update(overrides)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "UMT5Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def umt5_xxl(cls, **overrides: Any) -> "UMT5Config":
        return umt5_xxl(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "UMT5Config":
        return tiny(**overrides)


def umt5_xxl(**overrides: Any) -> UMT5Config:
    """The UMT5-XXL encoder used by Wan2.1 / Wan2.2 (5.7B parameters, 4096 wide, 24 layers, 64 heads)."""
    return UMT5Config(**overrides)


def tiny(**overrides: Any) -> UMT5Config:
    """A few-thousand-parameter encoder for tests (same structure, few buckets so the log range is exercised)."""
    base = dict(
        vocab_size=128,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    base.update(overrides)
    return UMT5Config(**base)


# ------------------------------------------------------------------------------------------------ relative buckets
def relative_position_buckets(
    query_length: int, key_length: int, num_buckets: int, max_distance: int
) -> np.ndarray:
    """(Lq, Lk) int32 bucket index of (key_pos - query_pos), bidirectional (encoder) T5 bucketing.

    Computed on the host in float32 with the same operation order as the PyTorch reference, so the integer truncation
    of the logarithmic buckets agrees bit for bit (lengths are static, so this is a constant under jit).
    """
    rel = np.arange(key_length, dtype=np.int64)[None, :] - np.arange(query_length, dtype=np.int64)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        log_ratio = np.log(rel.astype(np.float32) / np.float32(max_exact)) / np.float32(
            math.log(max_distance / max_exact)
        )
    log_ratio = (log_ratio * np.float32(half - max_exact)).astype(np.float32)
    # Positions below max_exact are selected by the `where`; their (-inf) log is never used.
    large = max_exact + np.where(np.isfinite(log_ratio), log_ratio, 0).astype(np.int64)
    large = np.minimum(large, half - 1)
    buckets = buckets + np.where(rel < max_exact, rel, large)
    return buckets.astype(np.int32)


# ----------------------------------------------------------------------------------------------------- layers
def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype: Any) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), shape, _F32)).astype(dtype)


class RMSNorm(nnx.Module):
    """T5LayerNorm: x · rsqrt(mean(x²) + eps) · scale, in fp32; no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float, param_dtype: Any):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(_F32)
        variance = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(variance + self.eps) * self.scale.get_value().astype(_F32)


class Projection(nnx.Module):
    """A bias-free linear map whose kernel is stored with explicit head axes, e.g. (D, H, K) for q/k/v."""

    def __init__(self, shape: tuple[int, ...], axes: tuple[str, ...], std: float, cfg: UMT5Config, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_normal(rngs, shape, std, cfg.param_dtype), out_sharding=axes)


class RelativeAttentionBias(nnx.Module):
    """One (num_buckets, heads) table; gathered into an additive (H, Lq, Lk) fp32 bias."""

    def __init__(self, cfg: UMT5Config, rngs: nnx.Rngs):
        shape = (cfg.relative_attention_num_buckets, cfg.num_heads)
        self.embedding = nnx.Param(_normal(rngs, shape, cfg.d_model**-0.5, cfg.param_dtype), out_sharding=(None, "heads"))

    def __call__(self, buckets: jax.Array) -> jax.Array:
        table = self.embedding.get_value().astype(_F32)
        return jnp.transpose(jnp.take(table, buckets, axis=0), (2, 0, 1))


class SelfAttention(nnx.Module):
    """Multi-head self-attention with an additive per-layer position bias and no logit scaling."""

    def __init__(self, cfg: UMT5Config, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
        qkv_axes = ("embed", "heads", "kv")
        self.q = Projection((d, h, k), qkv_axes, (d * k) ** -0.5, cfg, rngs)
        self.k = Projection((d, h, k), qkv_axes, d**-0.5, cfg, rngs)
        self.v = Projection((d, h, k), qkv_axes, d**-0.5, cfg, rngs)
        self.o = Projection((h, k, d), ("heads", "kv", "embed"), (h * k) ** -0.5, cfg, rngs)
        self.relative_attention_bias = RelativeAttentionBias(cfg, rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array, buckets: jax.Array) -> jax.Array:
        """x (B, L, D) in compute dtype; key_mask (B, L) bool; buckets (L, L) int32 → (B, L, D) fp32."""
        dt = self.cfg.dtype
        heads = ("batch", "length", "heads", "kv")
        q = constrain(jnp.einsum("bld,dhk->blhk", x, self.q.kernel.get_value().astype(dt)), heads)
        k = constrain(jnp.einsum("bld,dhk->blhk", x, self.k.kernel.get_value().astype(dt)), heads)
        v = constrain(jnp.einsum("bld,dhk->blhk", x, self.v.kernel.get_value().astype(dt)), heads)
        logits = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=_F32)
        logits = logits + self.relative_attention_bias(buckets)[None]
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(_F32).min)
        logits = constrain(logits, ("batch", "heads", "length", "kv_length"))
        weights = jax.nn.softmax(logits, axis=-1).astype(dt)
        out = constrain(jnp.einsum("bhqs,bshk->bqhk", weights, v), heads)
        return jnp.einsum("bqhk,hkd->bqd", out, self.o.kernel.get_value().astype(dt), preferred_element_type=_F32)


class GatedGeluFFN(nnx.Module):
    """wo( gelu_tanh(wi_0 x) ⊙ wi_1 x ); the activation runs in fp32."""

    def __init__(self, cfg: UMT5Config, rngs: nnx.Rngs):
        self.cfg = cfg
        d, f = cfg.d_model, cfg.d_ff
        self.wi_0 = Projection((d, f), ("embed", "mlp"), d**-0.5, cfg, rngs)
        self.wi_1 = Projection((d, f), ("embed", "mlp"), d**-0.5, cfg, rngs)
        self.wo = Projection((f, d), ("mlp", "embed"), f**-0.5, cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.cfg.dtype
        gate = jnp.einsum("bld,df->blf", x, self.wi_0.kernel.get_value().astype(dt), preferred_element_type=_F32)
        linear = jnp.einsum("bld,df->blf", x, self.wi_1.kernel.get_value().astype(dt), preferred_element_type=_F32)
        hidden = constrain((jax.nn.gelu(gate, approximate=True) * linear).astype(dt), ("batch", "length", "mlp"))
        return jnp.einsum("blf,fd->bld", hidden, self.wo.kernel.get_value().astype(dt), preferred_element_type=_F32)


class UMT5Block(nnx.Module):
    """Pre-norm self-attention and gated-GELU FFN, each with an fp32 residual add."""

    def __init__(self, cfg: UMT5Config, rngs: nnx.Rngs):
        self.cfg = cfg
        self.attention_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.param_dtype)
        self.self_attention = SelfAttention(cfg, rngs)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.param_dtype)
        self.ffn = GatedGeluFFN(cfg, rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array, buckets: jax.Array) -> jax.Array:
        dt = self.cfg.dtype
        x = x + self.self_attention(self.attention_norm(x).astype(dt), key_mask, buckets)
        x = x + self.ffn(self.ffn_norm(x).astype(dt))
        return constrain(x, ("batch", "length", "act_embed"))


class UMT5Encoder(nnx.Module):
    """encoder(input_ids (B, L) int, attention_mask (B, L) {0,1}) -> last hidden state (B, L, d_model) float32."""

    def __init__(self, config: UMT5Config, rngs: nnx.Rngs):
        self.config = config
        cfg = config
        self.shared = nnx.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=_F32,
            param_dtype=cfg.param_dtype,
            embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", "embed")),
            rngs=rngs,
        )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs: nnx.Rngs) -> UMT5Block:
            return UMT5Block(cfg, rngs)

        self.blocks = make_blocks(rngs)
        self.final_layer_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.param_dtype)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        if input_ids.ndim != 2:
            raise ValueError(f"UMT5Encoder: input_ids must be (B, L), got shape {input_ids.shape}")
        if not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"UMT5Encoder: input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"UMT5Encoder: attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        cfg = self.config
        length = input_ids.shape[1]
        buckets = jnp.asarray(
            relative_position_buckets(
                length, length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
            )
        )
        key_mask = attention_mask.astype(bool)
        x = constrain(self.shared(input_ids).astype(_F32), ("batch", "length", "act_embed"))

        graphdef, stacked = nnx.split(self.blocks)

        def body(h: jax.Array, layer_state: nnx.State) -> tuple[jax.Array, None]:
            return nnx.merge(graphdef, layer_state)(h, key_mask, buckets), None

        x, _ = jax.lax.scan(body, x, stacked)
        return self.final_layer_norm(x)
