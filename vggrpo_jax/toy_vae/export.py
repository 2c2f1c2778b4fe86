"""A toy VAE as shipped: fp32 safetensors (no pickles) plus a JSON manifest.

    <dir>/model.safetensors   parameters, keys = dotted nnx paths ("decoder.up_blocks.3.resnets.0.conv1.kernel")
    <dir>/manifest.json       {"format", "model": WanVAEConfig fields (latents_mean/std from the trained latents),
                               "config": the training config, "steps", "data", "heldout": metrics, "sha256", "bytes"}

``load_model(dir)`` rebuilds the WanVAE from the manifest, checks the file's sha256 and every tensor's name and shape
against the architecture (one error listing all differences), and returns the ready model (fp32).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from vggrpo_jax import shipped
from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig
from vggrpo_jax.shipped import WEIGHTS, sha256

FORMAT = "vggrpo_vae/1"


def config_fields(cfg: WanVAEConfig) -> dict[str, Any]:
    """The architecture fields of a WanVAEConfig as JSON values (dtypes left out: the shipped model is fp32)."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(cfg) if f.name not in ("dtype", "param_dtype")
            for v in [getattr(cfg, f.name)]}


def config_from_fields(fields: Mapping[str, Any], **overrides: Any) -> WanVAEConfig:
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields).items()}
    unknown = set(kw) - {f.name for f in dataclasses.fields(WanVAEConfig)}
    if unknown:
        raise ValueError(f"VAE manifest: unknown WanVAEConfig fields {sorted(unknown)}")
    kw.update(overrides)
    return WanVAEConfig(**kw)


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.asarray(v.get_value(), np.float32)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def save_model(directory: str, model: WanVAE, info: Mapping[str, Any]) -> dict:
    """Writes weights + manifest (``info``: config, steps, data, held-out metrics); returns the manifest."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WEIGHTS)
    save_file(flat_params(model), path)
    manifest = {"format": FORMAT, "model": config_fields(model.config), **dict(info), "sha256": sha256(path),
                "bytes": os.path.getsize(path)}
    shipped.write_manifest(directory, manifest)
    return manifest


def read_manifest(directory: str) -> dict:
    """The VAE manifest of ``directory`` (format checked)."""
    return shipped.read_manifest(directory, FORMAT)


def load_model(directory: str, dtype: Any = jnp.float32) -> WanVAE:
    """The WanVAE saved in ``directory`` (weights checked against the manifest's sha256 and the architecture)."""
    manifest = read_manifest(directory)
    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no VAE weights at {path}")
    digest = sha256(path)
    if digest != manifest["sha256"]:
        raise ValueError(f"{path}: sha256 {digest} does not match the manifest's {manifest['sha256']}")
    model = WanVAE(config_from_fields(manifest["model"], dtype=dtype), rngs=nnx.Rngs(0))
    tensors = load_file(path)
    live = nnx.to_flat_state(nnx.state(model, nnx.Param))
    names = {".".join(map(str, p)): v for p, v in live}
    problems = [f"missing {k}" for k in names if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in names]
    problems += [f"{k}: shape {tensors[k].shape} != {tuple(v.get_value().shape)}"
                 for k, v in names.items() if k in tensors and tensors[k].shape != tuple(v.get_value().shape)]
    if problems:
        raise ValueError(f"{path} does not fit the manifest's architecture:\n  " + "\n  ".join(problems))
    for k, v in names.items():
        v.set_value(jnp.asarray(tensors[k], v.get_value().dtype))
    return model
