"""The Wan DiT (diffusers' WanTransformer3DModel) in Flax NNX: Wan2.1 T2V and Wan2.2 TI2V.

    model(hidden_states (B, C, F, H, W), timestep (B,) or (B, F'·H'·W'), encoder_hidden_states (B, L, text_dim))
        -> (B, C, F, H, W) float32

Parameter paths follow diffusers' keys (condition_embedder.time_embedder.linear_1, blocks.attn1.to_q, ...), with
`kernel`/`scale` for weights; the few renames are in convert/wan_transformer.py. With `scan_layers` the blocks are one
module whose parameters carry a leading "layers" dim (nnx.vmap at init, lax.scan in the forward); otherwise an
nnx.List of blocks (paths blocks.N...).

Precision: the residual stream, norms, modulation (scale/shift/gate), RoPE, the timestep embedding and the softmax
statistics are fp32; the linear layers and attention matmuls run in `config.dtype`.

Per-token timesteps (Wan2.2 TI2V): a (B, F'·H'·W') timestep gives every token its own modulation, so the
image-conditioned first latent frame can be marked clean (t = 0) while the rest is noisy.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from vggrpo_jax.models.lora import LoRALinear, matches_targets
from vggrpo_jax.models.wan import attention as attn_lib
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.rope import apply_rope, rope_tables
from vggrpo_jax.parallel import constrain

ACT = ("batch", "length", "act_embed")
TEXT = ("batch", "kv_length", "act_embed")


def _linear(cfg: WanConfig, path: str, din: int, dout: int, axes, rngs: nnx.Rngs, dtype: Any = None) -> LoRALinear:
    """A LoRALinear whose adapter exists when `path` matches config.lora_targets."""
    rank = cfg.lora_rank if cfg.lora_rank and matches_targets(path, cfg.lora_targets) else 0
    return LoRALinear(
        din, dout, rank=rank, alpha=cfg.lora_alpha, kernel_axes=axes, dtype=dtype or cfg.dtype,
        param_dtype=cfg.param_dtype, rngs=rngs,
    )


def _layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm without affine, in fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nnx.Module):
    """Affine LayerNorm computed in fp32 (diffusers FP32LayerNorm with elementwise_affine=True)."""

    def __init__(self, dim: int, eps: float, param_dtype: Any):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        return _layer_norm(x, self.eps) * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class RMSNorm(nnx.Module):
    """RMSNorm over the last dim (all heads together), fp32 statistics; returns the input dtype."""

    def __init__(self, dim: int, eps: float, param_dtype: Any):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("heads",))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class WanAttention(nnx.Module):
    """Self- (attn1, with RoPE) or cross-attention (attn2) with RMSNorm on q and k across heads."""

    def __init__(self, cfg: WanConfig, path: str, rngs: nnx.Rngs):
        d = cfg.dim
        self.heads = cfg.num_attention_heads
        self.kind, self.block_q, self.block_kv = cfg.attention, cfg.attention_block_q, cfg.attention_block_kv
        self.to_q = _linear(cfg, f"{path}.to_q", d, d, ("embed", "heads"), rngs)
        self.to_k = _linear(cfg, f"{path}.to_k", d, d, ("embed", "heads"), rngs)
        self.to_v = _linear(cfg, f"{path}.to_v", d, d, ("embed", "heads"), rngs)
        self.to_out = _linear(cfg, f"{path}.to_out", d, d, ("heads", "embed"), rngs)
        self.norm_q = RMSNorm(d, cfg.eps, cfg.param_dtype)
        self.norm_k = RMSNorm(d, cfg.eps, cfg.param_dtype)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, rope=None) -> jax.Array:
        """x (B, L, dim) in compute dtype; context (B, Lk, dim) or None (self-attention); rope = (cos, sin)."""
        ctx = x if context is None else context
        b, l, _ = x.shape
        q = self.norm_q(self.to_q(x)).reshape(b, l, self.heads, -1)
        k = self.norm_k(self.to_k(ctx)).reshape(b, ctx.shape[1], self.heads, -1)
        v = self.to_v(ctx).reshape(b, ctx.shape[1], self.heads, -1)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q = constrain(checkpoint_name(q, "query"), attn_lib.Q_AXES)
        k = constrain(checkpoint_name(k, "key"), attn_lib.KV_AXES)
        v = constrain(checkpoint_name(v, "value"), attn_lib.KV_AXES)
        o = attn_lib.attention(q, k, v, self.kind, self.block_q, self.block_kv)
        o = checkpoint_name(o, "attention")
        return self.to_out(o.reshape(b, l, -1))


class FeedForward(nnx.Module):
    """Linear → GELU(tanh) → Linear (diffusers ffn.net.0.proj / ffn.net.2 = proj_in / proj_out)."""

    def __init__(self, cfg: WanConfig, path: str, rngs: nnx.Rngs):
        self.proj_in = _linear(cfg, f"{path}.proj_in", cfg.dim, cfg.ffn_dim, ("embed", "mlp"), rngs)
        self.proj_out = _linear(cfg, f"{path}.proj_out", cfg.ffn_dim, cfg.dim, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.proj_in(x)
        h = jax.nn.gelu(h.astype(jnp.float32), approximate=True).astype(h.dtype)
        return self.proj_out(h)


class WanBlock(nnx.Module):
    """Modulated self-attention → (affine-normed) cross-attention → modulated FFN, all residual in fp32."""

    def __init__(self, cfg: WanConfig, rngs: nnx.Rngs, path: str = "blocks"):
        d = cfg.dim
        self.eps, self.dtype = cfg.eps, cfg.dtype
        self.attn1 = WanAttention(cfg, f"{path}.attn1", rngs)
        self.attn2 = WanAttention(cfg, f"{path}.attn2", rngs)
        self.norm2 = LayerNorm(d, cfg.eps, cfg.param_dtype) if cfg.cross_attn_norm else None
        self.ffn = FeedForward(cfg, f"{path}.ffn", rngs)
        table = jax.random.normal(rngs.params(), (1, 6, d), jnp.float32) / math.sqrt(d)
        self.scale_shift_table = nnx.Param(table.astype(cfg.param_dtype), out_sharding=(None, None, "norm"))

    @jax.named_scope("wan_block")
    def __call__(self, x: jax.Array, context: jax.Array, temb6: jax.Array, rope) -> jax.Array:
        """x (B, L, dim) fp32; context (B, Lk, dim); temb6 (B, 6, dim) or (B, L, 6, dim) fp32; rope (cos, sin)."""
        table = self.scale_shift_table[...].astype(jnp.float32)
        if temb6.ndim == 4:  # per-token modulation: (B, L, 6, dim)
            mod = table[None] + temb6
        else:  # (B, 6, dim) → (B, 6, 1, dim), broadcast over tokens
            mod = (table + temb6)[:, :, None, :]
            mod = jnp.moveaxis(mod, 1, 2)  # (B, 1, 6, dim)
        shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, :, i] for i in range(6))

        # Named scopes label the ops in profiler traces (wan_block/self_attention/...), nothing else.
        x = constrain(x, ACT)
        with jax.named_scope("self_attention"):
            h = (_layer_norm(x, self.eps) * (1.0 + scale) + shift).astype(self.dtype)
            x = x + self.attn1(h, None, rope).astype(jnp.float32) * gate

        with jax.named_scope("cross_attention"):
            h = self.norm2(x) if self.norm2 is not None else x
            x = x + self.attn2(h.astype(self.dtype), context).astype(jnp.float32)

        with jax.named_scope("ffn"):
            h = (_layer_norm(x, self.eps) * (1.0 + c_scale) + c_shift).astype(self.dtype)
            x = x + self.ffn(h).astype(jnp.float32) * c_gate
        return constrain(x, ACT)


class PatchEmbed(nnx.Module):
    """Conv3d with kernel = stride = patch, as a matmul over flattened (pt, ph, pw, C) patches."""

    def __init__(self, cfg: WanConfig, rngs: nnx.Rngs):
        pt, ph, pw = cfg.patch_size
        fan_in = pt * ph * pw * cfg.in_channels
        kernel = jax.random.normal(rngs.params(), (pt, ph, pw, cfg.in_channels, cfg.dim)) / math.sqrt(fan_in)
        self.kernel = nnx.Param(kernel.astype(cfg.param_dtype), out_sharding=(None, None, None, "conv_in", "embed"))
        self.bias = nnx.Param(jnp.zeros((cfg.dim,), cfg.param_dtype), out_sharding=("embed",))
        self.patch, self.dtype = cfg.patch_size, cfg.dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, C, F, H, W) → (B, F'·H'·W', dim) in compute dtype, tokens in (F', H', W') row-major order."""
        b, c, f, h, w = x.shape
        pt, ph, pw = self.patch
        x = x.astype(self.dtype).reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
        x = x.transpose(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (f // pt) * (h // ph) * (w // pw), pt * ph * pw * c)
        kernel = self.kernel[...].astype(self.dtype).reshape(-1, self.kernel.shape[-1])
        return jnp.dot(x, kernel) + self.bias[...].astype(self.dtype)


class TimestepEmbedder(nnx.Module):
    """linear_1 → SiLU → linear_2 (diffusers TimestepEmbedding), fp32."""

    def __init__(self, cfg: WanConfig, path: str, din: int, rngs: nnx.Rngs):
        self.linear_1 = _linear(cfg, f"{path}.linear_1", din, cfg.dim, (None, "embed"), rngs, dtype=jnp.float32)
        self.linear_2 = _linear(cfg, f"{path}.linear_2", cfg.dim, cfg.dim, ("embed", "mlp"), rngs, dtype=jnp.float32)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(t)))


class TextEmbedder(nnx.Module):
    """linear_1 → GELU(tanh) → linear_2 (diffusers PixArtAlphaTextProjection)."""

    def __init__(self, cfg: WanConfig, path: str, rngs: nnx.Rngs):
        self.linear_1 = _linear(cfg, f"{path}.linear_1", cfg.text_dim, cfg.dim, ("mlp", "embed"), rngs)
        self.linear_2 = _linear(cfg, f"{path}.linear_2", cfg.dim, cfg.dim, ("embed", "mlp"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.linear_1(x)
        return self.linear_2(jax.nn.gelu(h.astype(jnp.float32), approximate=True).astype(h.dtype))


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """diffusers get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0): [cos, sin], fp32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[..., None] * freqs
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


class ConditionEmbedder(nnx.Module):
    """Timestep → temb (dim) and time_proj (6·dim); text → dim. Both timestep paths run in fp32."""

    def __init__(self, cfg: WanConfig, rngs: nnx.Rngs):
        p = "condition_embedder"
        self.freq_dim = cfg.freq_dim
        self.time_embedder = TimestepEmbedder(cfg, f"{p}.time_embedder", cfg.freq_dim, rngs)
        self.time_proj = _linear(cfg, f"{p}.time_proj", cfg.dim, 6 * cfg.dim, ("embed", "mlp"), rngs,
                                 dtype=jnp.float32)
        self.text_embedder = TextEmbedder(cfg, f"{p}.text_embedder", rngs)

    def __call__(self, timestep: jax.Array, text: jax.Array):
        temb = self.time_embedder(sinusoidal_embedding(timestep, self.freq_dim))
        return temb, self.time_proj(jax.nn.silu(temb)), self.text_embedder(text)


# ----------------------------------------------------------------------------------------------------- remat
def remat_policy(name: str) -> Callable | None:
    """The jax.checkpoint policy for a config name ("none" → no remat at all; see WanConfig)."""
    cp = jax.checkpoint_policies
    return {
        "full": cp.nothing_saveable,
        "save_dots": cp.dots_saveable,
        "save_dots_no_batch": cp.dots_with_no_batch_dims_saveable,
        "save_attention": cp.save_only_these_names("attention"),
        "save_qkv_attention": cp.save_only_these_names("query", "key", "value", "attention"),
    }[name]


class WanTransformer(nnx.Module):
    """Wan DiT. See module docstring for the call signature; `config` is a WanConfig."""

    def __init__(self, config: WanConfig, rngs: nnx.Rngs):
        cfg = self.config = config
        d = cfg.dim
        self.patch_embedding = PatchEmbed(cfg, rngs)
        self.condition_embedder = ConditionEmbedder(cfg, rngs)
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=cfg.num_layers,
                      transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make_blocks(r):
                return WanBlock(cfg, r)

            self.blocks = make_blocks(rngs)
        else:
            self.blocks = nnx.List([WanBlock(cfg, rngs, f"blocks.{i}") for i in range(cfg.num_layers)])
        self.proj_out = _linear(cfg, "proj_out", d, cfg.out_channels * math.prod(cfg.patch_size), ("embed", None),
                                rngs)
        table = jax.random.normal(rngs.params(), (1, 2, d), jnp.float32) / math.sqrt(d)
        self.scale_shift_table = nnx.Param(table.astype(cfg.param_dtype), out_sharding=(None, None, "norm"))

    # -------------------------------------------------------------------------------------------- validation
    def _check(self, hidden_states, timestep, encoder_hidden_states) -> tuple[int, int, int]:
        cfg = self.config
        if hidden_states.ndim != 5:
            raise ValueError(f"hidden_states must be (B, C, F, H, W), got shape {hidden_states.shape}")
        b, c, f, h, w = hidden_states.shape
        if c != cfg.in_channels:
            raise ValueError(f"hidden_states has {c} channels, the model expects in_channels={cfg.in_channels}")
        pt, ph, pw = cfg.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent (F, H, W)=({f}, {h}, {w}) is not divisible by patch_size {cfg.patch_size}")
        grid = (f // pt, h // ph, w // pw)
        n = math.prod(grid)
        if timestep.shape not in ((b,), (b, n)):
            raise ValueError(f"timestep must be ({b},) or ({b}, {n}) (per token), got shape {timestep.shape}")
        e = encoder_hidden_states
        if e.ndim != 3 or e.shape[0] != b or e.shape[2] != cfg.text_dim:
            raise ValueError(f"encoder_hidden_states must be ({b}, L, {cfg.text_dim}), got shape {e.shape}")
        return grid

    # --------------------------------------------------------------------------------------------- forward
    def _blocks(self, x, context, temb6, rope):
        cfg = self.config
        policy = None if cfg.remat_policy == "none" else remat_policy(cfg.remat_policy)

        def block_fn(graphdef):
            def step(state, x):
                return nnx.merge(graphdef, state)(x, context, temb6, rope)

            # prevent_cse only matters outside scan (XLA could merge the recomputation into the forward).
            return step if policy is None else jax.checkpoint(step, policy=policy, prevent_cse=not cfg.scan_layers)

        if cfg.scan_layers:
            graphdef, state = nnx.split(self.blocks)
            step = block_fn(graphdef)
            x, _ = jax.lax.scan(lambda x, s: (step(s, x), None), x, state)
            return x
        for block in self.blocks:
            graphdef, state = nnx.split(block)
            x = block_fn(graphdef)(state, x)
        return x

    def __call__(self, hidden_states: jax.Array, timestep: jax.Array, encoder_hidden_states: jax.Array) -> jax.Array:
        cfg = self.config
        hidden_states = jnp.asarray(hidden_states)
        timestep = jnp.asarray(timestep)
        encoder_hidden_states = jnp.asarray(encoder_hidden_states)
        grid = self._check(hidden_states, timestep, encoder_hidden_states)
        b, _, f, h, w = hidden_states.shape
        rope = rope_tables(grid, cfg.attention_head_dim, cfg.rope_max_seq_len)

        x = constrain(self.patch_embedding(hidden_states).astype(jnp.float32), ACT)
        temb, tproj, context = self.condition_embedder(timestep, encoder_hidden_states)
        context = constrain(context, TEXT)
        if timestep.ndim == 2:  # per token: temb (B, L, dim), tproj (B, L, 6·dim)
            temb6 = constrain(tproj.reshape(b, -1, 6, cfg.dim), ("batch", "length", None, "act_embed"))
        else:
            temb6 = tproj.reshape(b, 6, cfg.dim)
        x = self._blocks(x, context, temb6, rope)

        table = self.scale_shift_table[...].astype(jnp.float32)  # (1, 2, dim)
        if temb.ndim == 3:
            shift, scale = table[:, 0][:, None] + temb, table[:, 1][:, None] + temb  # (B, L, dim)
        else:
            shift, scale = (table[:, 0] + temb)[:, None], (table[:, 1] + temb)[:, None]  # (B, 1, dim)
        x = (_layer_norm(x, cfg.eps) * (1.0 + scale) + shift).astype(cfg.dtype)
        x = self.proj_out(x).astype(jnp.float32)  # (B, L, pt·ph·pw·C)

        pt, ph, pw = cfg.patch_size
        fp, hp, wp = grid
        x = x.reshape(b, fp, hp, wp, pt, ph, pw, cfg.out_channels)
        x = x.transpose(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, cfg.out_channels, f, h, w)
