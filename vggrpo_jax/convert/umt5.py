"""UMT5 encoder checkpoints (PyTorch) → `vggrpo_jax.models.umt5.UMT5Encoder`, strictly.

Two source namings are accepted (detected from the keys):

transformers `UMT5EncoderModel` ("hf"), per layer i:
  shared.weight                                             → shared.embedding              (V, D)
  encoder.embed_tokens.weight   ALIAS of shared.weight (tied); used when shared.weight is absent, otherwise it must be
                                equal to it and is dropped
  encoder.block.i.layer.0.layer_norm.weight                 → blocks.attention_norm.scale[i]
  encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight      → blocks.self_attention.{q,k,v}.kernel[i]  (H·K, D)→(D, H, K)
  encoder.block.i.layer.0.SelfAttention.o.weight            → blocks.self_attention.o.kernel[i]        (D, H·K)→(H, K, D)
  encoder.block.i.layer.0.SelfAttention.relative_attention_bias.weight
                                                            → blocks.self_attention.relative_attention_bias.embedding[i]
  encoder.block.i.layer.1.layer_norm.weight                 → blocks.ffn_norm.scale[i]
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight → blocks.ffn.{wi_0,wi_1,wo}.kernel[i]   (out, in)→(in, out)
  encoder.final_layer_norm.weight                           → final_layer_norm.scale

original Wan `models_t5_umt5-xxl-enc-bf16.pth` ("wan", the `T5Encoder` of Wan's wan/modules/t5.py), per layer i:
  token_embedding.weight → shared;  norm.weight → final_layer_norm;  blocks.i.norm1 → attention_norm;
  blocks.i.attn.{q,k,v,o} → self_attention.{q,k,v,o};  blocks.i.pos_embedding.embedding → relative_attention_bias;
  blocks.i.norm2 → ffn_norm;  blocks.i.ffn.gate.0 → ffn.wi_0 (the GELU branch);  blocks.i.ffn.fc1 → ffn.wi_1 (the
  linear branch);  blocks.i.ffn.fc2 → ffn.wo.

`to_torch_state_dict` is the inverse table (Flax → either naming), used by the round-trip tests and for export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.checkpoint import restore_params, save_params

from vggrpo_jax.convert.common import (
    IGNORE,
    CheckpointError,
    Target,
    as_state_dict,
    convert_state,
    flatten_state,
    identity,
    open_state_dict,
    to_numpy,
)
from vggrpo_jax.models.umt5 import UMT5Config, UMT5Encoder, umt5_xxl
from vggrpo_jax.parallel import abstract_state_shardings

FORMATS = ("hf", "wan")

# Per-layer leaves: Flax path under `blocks` → (hf suffix under encoder.block.i., wan suffix under blocks.i.)
_LAYER_TABLE: dict[tuple[str, ...], tuple[str, str]] = {
    ("attention_norm", "scale"): ("layer.0.layer_norm.weight", "norm1.weight"),
    ("self_attention", "q", "kernel"): ("layer.0.SelfAttention.q.weight", "attn.q.weight"),
    ("self_attention", "k", "kernel"): ("layer.0.SelfAttention.k.weight", "attn.k.weight"),
    ("self_attention", "v", "kernel"): ("layer.0.SelfAttention.v.weight", "attn.v.weight"),
    ("self_attention", "o", "kernel"): ("layer.0.SelfAttention.o.weight", "attn.o.weight"),
    ("self_attention", "relative_attention_bias", "embedding"): (
        "layer.0.SelfAttention.relative_attention_bias.weight",
        "pos_embedding.embedding.weight",
    ),
    ("ffn_norm", "scale"): ("layer.1.layer_norm.weight", "norm2.weight"),
    ("ffn", "wi_0", "kernel"): ("layer.1.DenseReluDense.wi_0.weight", "ffn.gate.0.weight"),
    ("ffn", "wi_1", "kernel"): ("layer.1.DenseReluDense.wi_1.weight", "ffn.fc1.weight"),
    ("ffn", "wo", "kernel"): ("layer.1.DenseReluDense.wo.weight", "ffn.fc2.weight"),
}
# Top-level leaves: Flax path → (hf key, wan key)
_TOP_TABLE: dict[tuple[str, ...], tuple[str, str]] = {
    ("shared", "embedding"): ("shared.weight", "token_embedding.weight"),
    ("final_layer_norm", "scale"): ("encoder.final_layer_norm.weight", "norm.weight"),
}
HF_EMBED_ALIAS = "encoder.embed_tokens.weight"

_HF_LAYER = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")
_WAN_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")


# ----------------------------------------------------------------------------------------------------- layouts
def _safe_linear_to(shape_fn: Callable[[np.ndarray], tuple[int, ...] | None]) -> Callable[[np.ndarray], np.ndarray]:
    """(out, in) → transpose → reshape to shape_fn(w.T). A tensor of the wrong rank or size is passed through
    unchanged, so `convert_state` reports it as mis-shaped (listing it with the others) instead of crashing here."""

    def transform(w: np.ndarray) -> np.ndarray:
        if w.ndim != 2:
            return w
        t = np.ascontiguousarray(w.T)
        shape = shape_fn(t)
        if shape is None or int(np.prod(shape)) != t.size:
            return t
        return t.reshape(shape)

    return transform


def _layouts(cfg: UMT5Config) -> dict[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]:
    h, k = cfg.num_heads, cfg.d_kv
    qkv = _safe_linear_to(lambda t: (t.shape[0], h, k))
    out = _safe_linear_to(lambda t: (h, k, t.shape[1]))
    lin = _safe_linear_to(lambda t: t.shape)
    return {
        ("self_attention", "q", "kernel"): qkv,
        ("self_attention", "k", "kernel"): qkv,
        ("self_attention", "v", "kernel"): qkv,
        ("self_attention", "o", "kernel"): out,
        ("ffn", "wi_0", "kernel"): lin,
        ("ffn", "wi_1", "kernel"): lin,
        ("ffn", "wo", "kernel"): lin,
    }


def _inverse_layout(path: tuple[str, ...], w: np.ndarray) -> np.ndarray:
    """Flax layout of one (per-layer) leaf → the PyTorch layout."""
    if path[-1] != "kernel":
        return w
    if path[:2] == ("self_attention", "o"):
        return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)  # (H, K, D) → (D, H·K)
    if path[0] == "self_attention":
        return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)  # (D, H, K) → (H·K, D)
    return np.ascontiguousarray(w.T)


# ----------------------------------------------------------------------------------------------------- key maps
def detect_format(keys: list[str] | Any) -> str:
    """'wan' for the original Wan naming, 'hf' for transformers; CheckpointError when neither is recognisable."""
    keys = list(keys)
    if any(k == "token_embedding.weight" or k.startswith("blocks.") for k in keys):
        return "wan"
    if any(k in ("shared.weight", HF_EMBED_ALIAS) or k.startswith("encoder.") for k in keys):
        return "hf"
    raise CheckpointError(
        "UMT5 encoder (unknown naming: expected transformers 'shared.weight'/'encoder.block.N...' or Wan "
        "'token_embedding.weight'/'blocks.N...')",
        unexpected=keys[:20],
    )


def make_key_map(cfg: UMT5Config, fmt: str, embed_source: str | None = None) -> Callable[[str], Any]:
    """PyTorch key → Target / IGNORE / None for naming `fmt`.

    embed_source (hf only): which of 'shared.weight' / 'encoder.embed_tokens.weight' feeds the embedding; the other
    one is IGNOREd (the caller checked that they are equal).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown UMT5 checkpoint format {fmt!r}; expected one of {FORMATS}")
    col = FORMATS.index(fmt)
    layouts = _layouts(cfg)
    top = {names[col]: path for path, names in _TOP_TABLE.items()}
    layer = {names[col]: path for path, names in _LAYER_TABLE.items()}
    layer_re = _HF_LAYER if fmt == "hf" else _WAN_LAYER
    if fmt == "hf":
        embed_source = embed_source or "shared.weight"
        top.pop("shared.weight")
        top[embed_source] = ("shared", "embedding")

    def key_map(key: str) -> Any:
        if fmt == "hf" and key in ("shared.weight", HF_EMBED_ALIAS) and key != embed_source:
            return IGNORE
        if key in top:
            return Target(top[key], identity)
        m = layer_re.match(key)
        if m and m.group(2) in layer:
            sub = layer[m.group(2)]
            return Target(("blocks",) + sub, layouts.get(sub, identity), layer=int(m.group(1)))
        return None

    return key_map


def _resolve_embedding_alias(state_dict: Mapping[str, Any]) -> str | None:
    """For the tied hf embedding: which key to read. Both present → they must be equal (else CheckpointError)."""
    has_shared, has_alias = "shared.weight" in state_dict, HF_EMBED_ALIAS in state_dict
    if has_shared and has_alias:
        a, b = to_numpy(state_dict["shared.weight"]), to_numpy(state_dict[HF_EMBED_ALIAS])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise CheckpointError(
                "UMT5 encoder",
                mismatched=[f"{HF_EMBED_ALIAS} differs from shared.weight (they are tied in UMT5 and must be equal)"],
            )
        return "shared.weight"
    if has_alias:
        return HF_EMBED_ALIAS
    return "shared.weight"


# ----------------------------------------------------------------------------------------------------- public API
def abstract_encoder(config: UMT5Config) -> UMT5Encoder:
    """The encoder with ShapeDtypeStruct leaves (no memory), for conversion and AOT compilation."""
    return nnx.eval_shape(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0)))


def from_torch_state_dict(
    state_dict: Mapping[str, Any] | str,
    config: UMT5Config,
    *,
    fmt: str | None = None,
    dtype: Any = None,
    shardings: nnx.State | None = None,
) -> UMT5Encoder:
    """Builds a `UMT5Encoder` from a PyTorch state dict (mapping or checkpoint path), strictly.

    fmt: 'hf' | 'wan' | None (detect from the keys). dtype: cast floating weights (default config.param_dtype).
    shardings: optional pytree of shardings (parallel.abstract_state_shardings of the abstract state).
    Raises CheckpointError listing every missing, unexpected and mis-shaped key.
    """
    state_dict = as_state_dict(state_dict)
    fmt = fmt or detect_format(state_dict.keys())
    embed_source = _resolve_embedding_alias(state_dict) if fmt == "hf" else None
    graphdef, abstract_state = nnx.split(abstract_encoder(config))
    state = convert_state(
        abstract_state,
        state_dict,
        make_key_map(config, fmt, embed_source),
        what=f"UMT5 encoder ({fmt} naming)",
        dtype=dtype,
        shardings=shardings,
    )
    return nnx.merge(graphdef, state)


def to_torch_state_dict(model_or_state: UMT5Encoder | nnx.State, fmt: str = "hf") -> dict[str, np.ndarray]:
    """The inverse table: Flax parameters → PyTorch keys and layouts of naming `fmt` (numpy arrays).

    For 'hf' only `shared.weight` is written (transformers re-ties encoder.embed_tokens on load).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown UMT5 checkpoint format {fmt!r}; expected one of {FORMATS}")
    col = FORMATS.index(fmt)
    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
    flat = flatten_state(state)
    out: dict[str, np.ndarray] = {}
    for path, names in _TOP_TABLE.items():
        out[names[col]] = flat.pop(".".join(path))
    prefix = "encoder.block" if fmt == "hf" else "blocks"
    for path, names in _LAYER_TABLE.items():
        stacked = flat.pop(".".join(("blocks",) + path))
        for i in range(stacked.shape[0]):
            out[f"{prefix}.{i}.{names[col]}"] = _inverse_layout(path, stacked[i])
    if flat:
        raise ValueError(f"to_torch_state_dict: Flax parameters without a PyTorch name: {sorted(flat)}")
    return out


# ----------------------------------------------------------------------------------------- identity, save, load
CONVERTED_CONFIG = "umt5_config.json"
CONVERTED_FINGERPRINT = "fingerprint.txt"
CONVERTED_PARAMS = "params"
_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".pth", ".pt", ".bin", ".ckpt")


def fingerprint_files(path: str) -> str:
    """sha256 over the bytes (and relative names) of a checkpoint file or of the checkpoint files in a directory.

    This is the checkpoint's identity for the embedding cache: any change to any weight changes it. It streams the
    files once (≈ 10–30 s for the 11 GB UMT5-XXL); converted orbax directories store it in fingerprint.txt instead.
    """
    if os.path.isdir(path):
        stored = os.path.join(path, CONVERTED_FINGERPRINT)
        if os.path.isfile(stored):
            with open(stored) as fh:
                return fh.read().strip()
        files = sorted(
            os.path.relpath(os.path.join(root, f), path)
            for root, _, names in os.walk(path)
            for f in names
            if f.endswith(_CHECKPOINT_SUFFIXES)
        )
        if not files:
            raise FileNotFoundError(f"no checkpoint files to fingerprint in {path}")
        base = path
    elif os.path.isfile(path):
        files, base = [os.path.basename(path)], os.path.dirname(path)
    else:
        raise FileNotFoundError(f"checkpoint not found: {path}")
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(base, rel), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def config_to_dict(cfg: UMT5Config) -> dict[str, Any]:
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("dtype", "param_dtype")}
    out["param_dtype"] = np.dtype(cfg.param_dtype).name
    return out


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> UMT5Config:
    d = dict(d)
    param_dtype = d.pop("param_dtype", None)
    cfg = UMT5Config.from_hf_config(d)
    if param_dtype is not None:
        cfg = cfg.replace(param_dtype=jnp.dtype(param_dtype))
    return cfg.replace(**overrides) if overrides else cfg


def save_converted(model: UMT5Encoder, out_dir: str, fingerprint: str, force: bool = False) -> None:
    """Writes out_dir/{params (orbax), umt5_config.json, fingerprint.txt}; the fingerprint names the source weights
    and storage dtype, so embeddings cached with a converted copy are told apart from those of other weights."""
    os.makedirs(out_dir, exist_ok=True)
    save_params(os.path.join(out_dir, CONVERTED_PARAMS), nnx.state(model, nnx.Param), force=force)
    with open(os.path.join(out_dir, CONVERTED_CONFIG), "w") as fh:
        json.dump(config_to_dict(model.config), fh, indent=2)
    with open(os.path.join(out_dir, CONVERTED_FINGERPRINT), "w") as fh:
        fh.write(fingerprint + "\n")


def converted_fingerprint(source_fingerprint: str, param_dtype: Any) -> str:
    """Identity of converted weights: the source checkpoint's bytes and the dtype they were cast to."""
    return hashlib.sha256(f"{source_fingerprint}|{np.dtype(param_dtype).name}".encode()).hexdigest()


def is_converted_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, CONVERTED_PARAMS)) and os.path.isfile(os.path.join(path, CONVERTED_CONFIG))


def _resolve_config(path: str, config: UMT5Config | None, overrides: Mapping[str, Any]) -> tuple[UMT5Config, bool]:
    """(config to build, whether `path` is a converted orbax dir); reads no weights."""
    if is_converted_dir(path):
        if config is None:
            with open(os.path.join(path, CONVERTED_CONFIG)) as fh:
                config = config_from_dict(json.load(fh))
        return config.replace(**overrides), True
    if config is None:
        config_json = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "config.json")
        if os.path.isfile(config_json):
            with open(config_json) as fh:
                config = UMT5Config.from_hf_config(json.load(fh))
        elif detect_format(open_state_dict(path).keys()) == "wan":
            config = umt5_xxl()
        else:
            raise FileNotFoundError(f"{path}: transformers checkpoint without config.json; pass a UMT5Config")
    return config.replace(**overrides), False


def _overrides(dtype: Any, compute_dtype: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dtype is not None:
        out["param_dtype"] = dtype
    if compute_dtype is not None:
        out["dtype"] = compute_dtype
    return out


def encoder_fingerprint(path: str, config: UMT5Config | None = None, *, dtype: Any = None) -> str:
    """The fingerprint `load_encoder(path, config, dtype=dtype)` returns, without building the model.

    Converted dir: its fingerprint.txt (re-keyed if the weights are cast to another dtype). PyTorch checkpoint: the
    sha256 of its files combined with the storage dtype.
    """
    cfg, converted = _resolve_config(path, config, _overrides(dtype, None))
    if converted:
        fingerprint = fingerprint_files(path)
        with open(os.path.join(path, CONVERTED_CONFIG)) as fh:
            stored_dtype = json.load(fh).get("param_dtype", "float32")
        if np.dtype(cfg.param_dtype) != np.dtype(stored_dtype):
            fingerprint = converted_fingerprint(fingerprint, cfg.param_dtype)
        return fingerprint
    return converted_fingerprint(fingerprint_files(path), cfg.param_dtype)


def load_encoder(
    path: str,
    config: UMT5Config | None = None,
    *,
    dtype: Any = None,
    compute_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[UMT5Encoder, str]:
    """Loads an encoder and its fingerprint from a converted orbax dir (tools/convert_umt5.py) or a PyTorch checkpoint.

    PyTorch checkpoints: a transformers directory (config.json + safetensors) or the Wan .pth (its config is the
    umt5_xxl preset). `config` overrides the stored one; `dtype` casts the weights (param_dtype); `compute_dtype`
    sets the matmul dtype. The fingerprint changes with the weight dtype, not with the compute dtype.
    With `mesh`, every weight is placed directly at the sharding its logical axes ask for (never whole on one device).
    """
    cfg, converted = _resolve_config(path, config, _overrides(dtype, compute_dtype))
    shardings = None
    if mesh is not None:
        shardings = abstract_state_shardings(nnx.split(abstract_encoder(cfg))[1], mesh)
    if converted:
        graphdef, abstract_state = nnx.split(abstract_encoder(cfg))
        state = restore_params(os.path.join(path, CONVERTED_PARAMS), abstract_state, shardings)
        model = nnx.merge(graphdef, state)
    else:
        model = from_torch_state_dict(path, cfg, shardings=shardings)
    return model, encoder_fingerprint(path, cfg, dtype=cfg.param_dtype)
