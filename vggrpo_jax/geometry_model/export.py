"""A geometry model as shipped: fp32 safetensors (no pickles) plus a JSON manifest.

    <dir>/model.safetensors   parameters, keys = dotted nnx paths ("info_sharing.blocks.0.attn.qkv.kernel")
    <dir>/manifest.json       {"format", "model": Any4DConfig fields, "config": the training config, "steps",
                               "data": {dataset, train/held-out seeds}, "heldout": metrics, "sha256", "bytes"}

`load_model(dir)` rebuilds the Any4D from the manifest, checks the file's sha256 against it and every tensor's name
and shape against the architecture (one error listing all differences), and returns the ready model.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from vggrpo_jax.models.any4d import Any4D, Any4DConfig

FORMAT = "vggrpo_geometry/1"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def any4d_config_from(fields: Mapping[str, Any]) -> Any4DConfig:
    """Any4DConfig from a JSON/ConfigDict mapping (tuples restored; dtypes are fp32)."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields).items()}
    unknown = set(kw) - set(Any4DConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"model config: unknown Any4DConfig fields {sorted(unknown)}")
    return Any4DConfig(**kw)


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.asarray(v.get_value(), np.float32)
            for path, v in nnx.to_flat_state(nnx.state(model))}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(directory: str, model: nnx.Module, model_fields: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
    """Writes weights + manifest (`info` adds config, steps, data, held-out metrics); returns the manifest."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WEIGHTS)
    save_file(flat_params(model), path)
    manifest = {"format": FORMAT, "model": dict(model_fields), **dict(info), "sha256": sha256(path),
                "bytes": os.path.getsize(path)}
    with open(os.path.join(directory, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, default=_jsonable)
    return manifest


def _jsonable(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"manifest: {type(x).__name__} is not JSON")


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no geometry-model manifest at {path}")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load_model(directory: str) -> Any4D:
    """The shipped Any4D of `directory` (see module doc)."""
    manifest = read_manifest(directory)
    path = os.path.join(directory, WEIGHTS)
    digest = sha256(path)
    if digest != manifest["sha256"]:
        raise ValueError(f"{path}: sha256 {digest} differs from the manifest's {manifest['sha256']}")
    config = any4d_config_from(manifest["model"])
    abstract = nnx.eval_shape(lambda: Any4D(config, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    tensors = load_file(path)
    flat = nnx.to_flat_state(state)
    names = {".".join(map(str, p)) for p, _ in flat}
    problems = [f"missing {k}" for k in sorted(names - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - names)]
    out = []
    for p, v in flat:
        k = ".".join(map(str, p))
        if k in tensors:
            want = tuple(v.get_value().shape)
            if tuple(tensors[k].shape) != want:
                problems.append(f"{k}: shape {tuple(tensors[k].shape)} vs {want}")
            else:
                out.append((p, v.replace(jnp.asarray(tensors[k], v.get_value().dtype))))
    if problems:
        raise ValueError(f"{path} does not match the manifest's Any4D:\n  " + "\n  ".join(problems))
    return nnx.merge(graphdef, nnx.from_flat_state(out))


__all__ = ["FORMAT", "any4d_config_from", "flat_params", "load_model", "read_manifest", "save_model", "sha256"]
