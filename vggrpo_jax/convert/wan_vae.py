"""PyTorch → Flax converter for the Wan VAE: diffusers AutoencoderKLWan, or the original Wan2.1_VAE.pth / Wan2.2_VAE.pth.

Diffusers keys map one-to-one onto our variable paths (`encoder.down_blocks.3.conv1.weight` →
encoder/down_blocks/3/conv1/kernel); the only renames are `resample.1` → `resample` (the 0th entry of diffusers'
Sequential is a parameter-free pad/upsample), `weight` → `kernel` (conv layout transform) and norm `gamma`
(C, 1, 1[, 1]) → (C,). A bad checkpoint raises common.CheckpointError.

The original Wan repository names (wan/modules/vae.py, vae2_2.py) differ; `original_key(diffusers_key, config)` is
the documented table between the two, derived from the architecture:

    encoder.conv1 / decoder.conv1           ↔ encoder.conv_in / decoder.conv_in
    encoder.head.0 / .head.2                ↔ encoder.norm_out / encoder.conv_out        (same for decoder)
    {en,de}coder.middle.0 / .1 / .2         ↔ mid_block.resnets.0 / attentions.0 / resnets.1
    conv1 / conv2                           ↔ quant_conv / post_quant_conv
    residual.0 / .2 / .3 / .6, shortcut     ↔ norm1 / conv1 / norm2 / conv2, conv_shortcut   (inside residual blocks)
    Wan2.1 encoder.downsamples.N            ↔ encoder.down_blocks.N                     (same flat list)
    Wan2.1 decoder.upsamples.N              ↔ decoder.up_blocks.i.resnets.j (N = i·(R+2) + j) or
                                              decoder.up_blocks.i.upsamplers.0 (N = i·(R+2) + R + 1), R = num_res_blocks
    Wan2.2 encoder.downsamples.i.downsamples.j ↔ encoder.down_blocks.i.resnets.j (j < R) / .downsampler (j = R)
    Wan2.2 decoder.upsamples.i.upsamples.j     ↔ decoder.up_blocks.i.resnets.j (j ≤ R) / .upsampler (j = R + 1)
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from flax import nnx

from vggrpo_jax.convert.common import (
    CheckpointError,
    Target,
    as_state_dict,
    conv,
    convert_state,
    flatten_state,
    identity,
    open_state_dict,
)
from vggrpo_jax.errors import PathNotFoundError, read_json
from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig

__all__ = [
    "from_torch_state_dict",
    "load_config",
    "diffusers_keys",
    "original_key",
    "to_original_state_dict",
    "is_original_format",
]


# --------------------------------------------------------------------------------------------- diffusers ↔ Flax
def _gamma(w: np.ndarray) -> np.ndarray:
    """(C, 1, 1[, 1]) → (C,); anything else is passed through so the shape check reports it."""
    if w.ndim >= 1 and all(d == 1 for d in w.shape[1:]):
        return w.reshape(w.shape[0])
    return w


def _path_of(key: str) -> Target | None:
    parts = key.split(".")
    leaf = parts[-1]
    path: list[Any] = []
    i = 0
    body = parts[:-1]
    while i < len(body):
        p = body[i]
        if p == "resample" and i + 1 < len(body) and body[i + 1] == "1":
            path.append("resample")
            i += 2
            continue
        path.append(int(p) if p.isdigit() else p)
        i += 1
    if leaf == "weight":
        return Target(tuple(path) + ("kernel",), conv)
    if leaf == "bias":
        return Target(tuple(path) + ("bias",), identity)
    if leaf == "gamma":
        return Target(tuple(path) + ("gamma",), _gamma)
    return None


def _key_of(path: str) -> str:
    """Our flat path 'encoder.down_blocks.2.resample.kernel' → diffusers 'encoder.down_blocks.2.resample.1.weight'."""
    parts = path.split(".")
    leaf = {"kernel": "weight", "bias": "bias", "gamma": "gamma"}[parts[-1]]
    body = ["resample.1" if p == "resample" else p for p in parts[:-1]]
    return ".".join(body + [leaf])


def _abstract(config: WanVAEConfig) -> tuple[nnx.GraphDef, nnx.State]:
    model = nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    return nnx.split(model)


def diffusers_keys(config: WanVAEConfig) -> list[str]:
    """Every diffusers state-dict key the model with `config` has (derived from our module tree)."""
    _, state = _abstract(config)
    return [_key_of(".".join(str(p) for p in path)) for path, _ in nnx.to_flat_state(state)]


# --------------------------------------------------------------------------------------------- original ↔ diffusers
_RES_RENAME = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
               "conv_shortcut": "shortcut"}  # fmt: skip
_TOP_RENAME = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_HEAD_RENAME = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}


def _res_tail(rest: list[str]) -> list[str]:
    """Inside a residual block: norm1.gamma → residual.0.gamma, ..."""
    return _RES_RENAME.get(rest[0], rest[0]).split(".") + rest[1:]


def original_key(key: str, config: WanVAEConfig) -> str:
    """The original Wan repository's name for diffusers key `key` (see the module docstring for the table)."""
    parts = key.split(".")
    if parts[0] in _TOP_RENAME:
        return ".".join([_TOP_RENAME[parts[0]]] + parts[1:])
    side, name, rest = parts[0], parts[1], parts[2:]
    if name in _HEAD_RENAME:
        return ".".join([side] + _HEAD_RENAME[name].split(".") + rest)
    if name == "mid_block":
        kind, idx, tail = rest[0], int(rest[1]), rest[2:]
        if kind == "resnets":
            return ".".join([side, "middle", str(2 * idx)] + _res_tail(tail))
        return ".".join([side, "middle", "1"] + tail)  # attentions.0: norm / to_qkv / proj keep their names
    r = config.num_res_blocks
    if side == "encoder" and name == "down_blocks":
        i, tail = int(rest[0]), rest[1:]
        if not config.is_residual:
            is_res = tail[0] in _RES_RENAME
            return ".".join([side, "downsamples", str(i)] + (_res_tail(tail) if is_res else tail))
        if tail[0] == "resnets":
            return ".".join([side, "downsamples", str(i), "downsamples", tail[1]] + _res_tail(tail[2:]))
        if tail[0] == "downsampler":
            return ".".join([side, "downsamples", str(i), "downsamples", str(r)] + tail[1:])
    if side == "decoder" and name == "up_blocks":
        i, tail = int(rest[0]), rest[1:]
        if not config.is_residual:
            if tail[0] == "resnets":
                return ".".join([side, "upsamples", str(i * (r + 2) + int(tail[1]))] + _res_tail(tail[2:]))
            if tail[0] == "upsamplers":
                return ".".join([side, "upsamples", str(i * (r + 2) + r + 1)] + tail[2:])
        else:
            if tail[0] == "resnets":
                return ".".join([side, "upsamples", str(i), "upsamples", tail[1]] + _res_tail(tail[2:]))
            if tail[0] == "upsampler":
                return ".".join([side, "upsamples", str(i), "upsamples", str(r + 1)] + tail[1:])
    raise KeyError(f"no original-Wan name for diffusers key {key!r}")


def original_to_diffusers_table(config: WanVAEConfig) -> dict[str, str]:
    """original key → diffusers key, for every parameter of the model."""
    return {original_key(k, config): k for k in diffusers_keys(config)}


def to_original_state_dict(state_dict: Mapping[str, Any], config: WanVAEConfig) -> dict[str, Any]:
    """A diffusers-named state dict renamed to the original Wan checkpoint's names (tests, export)."""
    return {original_key(k, config): v for k, v in state_dict.items()}


def is_original_format(keys: Any) -> bool:
    """Original Wan checkpoints have `encoder.conv1.*`; diffusers ones `encoder.conv_in.*`."""
    return any(k.startswith(("encoder.conv1.", "encoder.downsamples.", "decoder.upsamples.")) for k in keys)


# --------------------------------------------------------------------------------------------- entry points
def load_config(path: str) -> WanVAEConfig:
    """WanVAEConfig from a diffusers VAE directory (config.json), a pipeline root (vae/config.json) or a json file."""
    for candidate in (path, os.path.join(path, "config.json"), os.path.join(path, "vae", "config.json")):
        if os.path.isfile(candidate) and candidate.endswith(".json"):
            return WanVAEConfig.from_diffusers_config(read_json(candidate))
    raise PathNotFoundError(f"no diffusers VAE config.json at {path} (nor {path}/vae/config.json)")


def _resolve_dir(path: str) -> str:
    """A pipeline root (with vae/ and no config.json of its own) resolves to its vae/ folder."""
    if os.path.isdir(os.path.join(path, "vae")) and not os.path.exists(os.path.join(path, "config.json")):
        return os.path.join(path, "vae")
    return path


def from_torch_state_dict(
    state_dict: Mapping[str, Any] | str,
    config: WanVAEConfig | None = None,
    *,
    dtype: Any = None,
    shardings: nnx.State | None = None,
) -> WanVAE:
    """Builds a WanVAE from PyTorch weights, strictly (every parameter exactly once, every shape checked).

    state_dict: mapping key → numpy array / torch tensor, or a path: a diffusers VAE directory (safetensors, its
      config.json is read when `config` is None), a pipeline root with vae/, a .safetensors file, or an original
      Wan VAE .pth (Wan2.1_VAE.pth, Wan2.2_VAE.pth; pass `config`, e.g. WanVAEConfig.wan22()).
    dtype: cast the parameters (default: the config's param_dtype, fp32).
    shardings: optional pytree of shardings (parallel.abstract_state_shardings) to place each array as it is read.
    Raises CheckpointError listing missing / unexpected / mis-shaped keys.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        path = _resolve_dir(os.fspath(state_dict))
        if config is None:
            config = load_config(path if os.path.isdir(path) else os.path.dirname(path))
        sd = open_state_dict(path)
        what = f"Wan VAE from {path}"
    else:
        if config is None:
            raise ValueError("from_torch_state_dict: pass `config` when giving a state dict mapping")
        sd = as_state_dict(state_dict)
        what = "Wan VAE"
    graphdef, abstract = _abstract(config)
    if is_original_format(list(sd.keys())):
        table = original_to_diffusers_table(config)
        key_map = lambda k: _path_of(table[k]) if k in table else None  # noqa: E731
        what += " (original Wan key names)"
    else:
        key_map = _path_of
    state = convert_state(abstract, sd, key_map, what=what, dtype=dtype, shardings=shardings)
    return nnx.merge(graphdef, state)


def to_torch_state_dict(model: WanVAE) -> dict[str, np.ndarray]:
    """Our parameters under diffusers' keys and layouts (numpy), the inverse of from_torch_state_dict."""
    out = {}
    for path, value in flatten_state(nnx.state(model, nnx.Param)).items():
        key = _key_of(path)
        if key.endswith(".weight"):
            nd = value.ndim - 2
            value = np.transpose(value, (nd + 1, nd) + tuple(range(nd)))
        elif key.endswith(".gamma"):
            extra = 2 if ".attentions." in key else 3
            value = value.reshape(value.shape + (1,) * extra)
        out[key] = np.ascontiguousarray(value)
    return out

