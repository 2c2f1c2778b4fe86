"""Wan DiT checkpoints (diffusers or original Wan key names) → WanTransformer, strictly and tensor by tensor.

    model = from_torch_state_dict("Wan2.1-T2V-1.3B-Diffusers/transformer", WanConfig.wan21_1_3b(), mesh=mesh)

Diffusers key → Flax path (layouts from convert.common):

    patch_embedding.weight (D, C, pt, ph, pw)            patch_embedding.kernel (pt, ph, pw, C, D)     conv
    condition_embedder.{time_embedder.linear_1, time_embedder.linear_2, time_proj,
                        text_embedder.linear_1, text_embedder.linear_2}.weight   same path .kernel    linear
    blocks.N.attn{1,2}.{to_q,to_k,to_v}.weight           blocks[.N].attn{1,2}.to_*.kernel             linear
    blocks.N.attn{1,2}.to_out.0.weight                   blocks[.N].attn{1,2}.to_out.kernel           linear
    blocks.N.attn{1,2}.norm_{q,k}.weight                 blocks[.N].attn{1,2}.norm_{q,k}.scale
    blocks.N.norm2.{weight,bias}                         blocks[.N].norm2.{scale,bias}
    blocks.N.ffn.net.0.proj / ffn.net.2                  blocks[.N].ffn.proj_in / ffn.proj_out        linear
    blocks.N.scale_shift_table, scale_shift_table        same (1, 6, D) / (1, 2, D)
    proj_out.weight                                      proj_out.kernel                              linear
(biases keep their names). With scan_layers the N-th block goes to layer N of the stacked parameter.

Original Wan names are first renamed to diffusers names (ORIGINAL_TO_DIFFUSERS; the same table as diffusers'
scripts/convert_wan_to_diffusers.py): text_embedding.0/2, time_embedding.0/2, time_projection.1,
blocks.N.self_attn / cross_attn.{q,k,v,o,norm_q,norm_k}, blocks.N.norm3 (the affine norm before cross-attention,
diffusers' norm2), blocks.N.ffn.0/2, blocks.N.modulation, head.head, head.modulation; a "model.diffusion_model."
prefix is dropped.

LoRA adapters are not in base checkpoints: they are allowed missing and initialised (lora_a Gaussian with std
1/rank, lora_b = 0, so the adapted model equals the base model).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vggrpo_jax.convert.common import IGNORE, Target, as_state_dict, conv, convert_state, identity, linear
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.parallel import abstract_state_shardings

# Original Wan name (regex on the whole key) → diffusers name. Applied once, first match wins.
ORIGINAL_TO_DIFFUSERS: tuple[tuple[str, str], ...] = (
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^head\.head\.", "proj_out."),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"^blocks\.(\d+)\.self_attn\.([qkv])\.", r"blocks.\1.attn1.to_\2."),
    (r"^blocks\.(\d+)\.self_attn\.o\.", r"blocks.\1.attn1.to_out.0."),
    (r"^blocks\.(\d+)\.self_attn\.(norm_[qk])\.", r"blocks.\1.attn1.\2."),
    (r"^blocks\.(\d+)\.cross_attn\.([qkv])\.", r"blocks.\1.attn2.to_\2."),
    (r"^blocks\.(\d+)\.cross_attn\.o\.", r"blocks.\1.attn2.to_out.0."),
    (r"^blocks\.(\d+)\.cross_attn\.(norm_[qk])\.", r"blocks.\1.attn2.\2."),
    (r"^blocks\.(\d+)\.norm3\.", r"blocks.\1.norm2."),
    (r"^blocks\.(\d+)\.ffn\.0\.", r"blocks.\1.ffn.net.0.proj."),
    (r"^blocks\.(\d+)\.ffn\.2\.", r"blocks.\1.ffn.net.2."),
    (r"^blocks\.(\d+)\.modulation$", r"blocks.\1.scale_shift_table"),
)
_ORIGINAL_MARKERS = re.compile(r"^(text_embedding|time_embedding|time_projection|head\.|blocks\.\d+\.(self_attn|"
                               r"cross_attn|norm3|ffn\.[02]\.|modulation))")

# Diffusers linear modules inside a block → our module path.
_BLOCK_LINEARS = {
    "attn1.to_q": "attn1.to_q", "attn1.to_k": "attn1.to_k", "attn1.to_v": "attn1.to_v",
    "attn1.to_out.0": "attn1.to_out",
    "attn2.to_q": "attn2.to_q", "attn2.to_k": "attn2.to_k", "attn2.to_v": "attn2.to_v",
    "attn2.to_out.0": "attn2.to_out",
    "ffn.net.0.proj": "ffn.proj_in", "ffn.net.2": "ffn.proj_out",
}
_TOP_LINEARS = (
    "condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
    "condition_embedder.time_proj", "condition_embedder.text_embedder.linear_1",
    "condition_embedder.text_embedder.linear_2", "proj_out",
)
# Known keys we drop on purpose (diffusers' _keys_to_ignore_on_load_unexpected).
_IGNORED = re.compile(r"\.norm_added_q\.")


def original_to_diffusers_key(key: str) -> str:
    """Renames one original-Wan key to its diffusers name (diffusers names pass through unchanged)."""
    key = key.removeprefix("model.diffusion_model.")
    for pattern, repl in ORIGINAL_TO_DIFFUSERS:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def key_map(config: WanConfig):
    """The converter's key map: a (diffusers or original) key → Target, IGNORE, or None (unknown)."""

    def block_target(n: int, rest: str, transform) -> Target:
        if config.scan_layers:
            return Target(("blocks",) + _split(rest), transform, layer=n)
        return Target(("blocks", n) + _split(rest), transform)

    def one(key: str):
        key = original_to_diffusers_key(key)
        if _IGNORED.search(key):
            return IGNORE
        if key == "patch_embedding.weight":
            return Target(("patch_embedding", "kernel"), conv)
        if key == "patch_embedding.bias":
            return Target(("patch_embedding", "bias"))
        if key == "scale_shift_table":
            return Target(("scale_shift_table",))
        for mod in _TOP_LINEARS:
            if key == f"{mod}.weight":
                return Target(_split(mod) + ("kernel",), linear)
            if key == f"{mod}.bias":
                return Target(_split(mod) + ("bias",))
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m is None:
            return None
        n, rest = int(m.group(1)), m.group(2)
        if rest == "scale_shift_table":
            return block_target(n, "scale_shift_table", identity)
        m2 = re.fullmatch(r"(.+)\.(weight|bias)", rest)
        if m2 is None:
            return None
        mod, kind = m2.groups()
        if mod in _BLOCK_LINEARS:
            return block_target(n, f"{_BLOCK_LINEARS[mod]}.{'kernel' if kind == 'weight' else 'bias'}",
                                linear if kind == "weight" else identity)
        if re.fullmatch(r"attn[12]\.norm_[qk]", mod) and kind == "weight":
            return block_target(n, f"{mod}.scale", identity)
        if mod == "norm2":
            return block_target(n, f"norm2.{'scale' if kind == 'weight' else 'bias'}", identity)
        return None

    return one


def is_original_format(keys) -> bool:
    """True when any key uses original Wan names (self_attn, ffn.0, head.head, ...)."""
    return any(_ORIGINAL_MARKERS.match(k.removeprefix("model.diffusion_model.")) for k in keys)


def _is_lora(path) -> bool:
    return path[-1] in ("lora_a", "lora_b")


def _init_lora(state: nnx.State, config: WanConfig, shardings, seed: int) -> nnx.State:
    """Fills abstract LoRA leaves: lora_a ~ N(0, (1/rank)²), lora_b = 0 (adapters are small: made on the host)."""
    flat = list(nnx.to_flat_state(state))
    flat_shard = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    std = 1.0 / max(config.lora_rank, 1)
    out = []
    for i, (path, var) in enumerate(flat):
        value = var.get_value()
        if _is_lora(path) and isinstance(value, jax.ShapeDtypeStruct):
            if path[-1] == "lora_b":
                host = np.zeros(value.shape, value.dtype)
            else:
                host = (std * np.random.default_rng([seed, i]).standard_normal(value.shape)).astype(value.dtype)
            sharding = flat_shard.get(path)
            sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
            var = var.replace(jax.device_put(host, sharding) if sharding is not None else jnp.asarray(host))
        out.append((path, var))
    return nnx.from_flat_state(out)


def abstract_model(config: WanConfig) -> WanTransformer:
    """The model with ShapeDtypeStruct leaves (nothing allocated)."""
    return nnx.eval_shape(lambda: WanTransformer(config, nnx.Rngs(0)))


def from_torch_state_dict(
    state_dict: Mapping[str, Any] | str,
    config: WanConfig,
    *,
    mesh: Mesh | None = None,
    shardings: Any = None,
    dtype: Any = None,
    lora_seed: int = 0,
) -> WanTransformer:
    """Builds a WanTransformer from a PyTorch state dict (numpy arrays or torch tensors) or a checkpoint path.

    The model is built abstractly; each converted tensor is placed at its sharding (`shardings`, or derived from the
    parameters' logical axes on `mesh`), so a full model never exists on one device. dtype: storage dtype of the
    base weights (default config.param_dtype). Raises CheckpointError listing every missing, unexpected or
    mis-shaped key.
    """
    sd = as_state_dict(state_dict)
    graphdef, abs_state = nnx.split(abstract_model(config))
    if shardings is None and mesh is not None:
        shardings = abstract_state_shardings(abs_state, mesh)
    what = "Wan transformer (original names)" if is_original_format(sd.keys()) else "Wan transformer"
    state = convert_state(abs_state, sd, key_map(config), what=what, dtype=dtype, shardings=shardings,
                          allow_missing=_is_lora)
    state = _init_lora(state, config, shardings, lora_seed)
    return nnx.merge(graphdef, state)
