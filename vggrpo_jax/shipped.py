"""Shipped weights: a model's variables as fp32 safetensors (no pickles) beside a JSON manifest.

    <dir>/model.safetensors   every nnx variable, keys = dotted paths ("blocks.0.attn1.to_q.kernel")
    <dir>/manifest.json       {"format", "sha256", "bytes", ...the caller's fields (config, data, steps, metrics)}

`load_state` checks the file's sha256 against the manifest and every tensor's name and shape against the abstract
state (one error listing all differences) before returning the filled state.
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

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"manifest: {type(x).__name__} is not JSON")


def save_state(directory: str, state: nnx.State, fmt: str, info: Mapping[str, Any]) -> dict:
    """Writes `state`'s variables (fp32) and the manifest {"format": fmt, **info, sha256, bytes}; returns it."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WEIGHTS)
    flat = {".".join(map(str, p)): np.asarray(v.get_value(), np.float32) for p, v in nnx.to_flat_state(state)}
    save_file(flat, path)
    manifest = {"format": fmt, **dict(info), "sha256": sha256(path), "bytes": os.path.getsize(path)}
    write_manifest(directory, manifest)
    return manifest


def write_manifest(directory: str, manifest: Mapping[str, Any]) -> None:
    """Writes <directory>/manifest.json atomically (temporary file + rename): a crash never leaves half a manifest."""
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(dict(manifest), f, indent=1, sort_keys=True, default=_jsonable)
    os.replace(tmp, os.path.join(directory, MANIFEST))


def read_manifest(directory: str, fmt: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no manifest at {path}")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != fmt:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}")
    return manifest


def load_state(directory: str, abstract: nnx.State, manifest: Mapping[str, Any]) -> nnx.State:
    """The state of `abstract`'s structure filled from <directory>/model.safetensors (sha256 and layout checked)."""
    path = os.path.join(directory, WEIGHTS)
    digest = sha256(path)
    if digest != manifest["sha256"]:
        raise ValueError(f"{path}: sha256 {digest} differs from the manifest's {manifest['sha256']}")
    tensors = load_file(path)
    flat = nnx.to_flat_state(abstract)
    names = {".".join(map(str, p)) for p, _ in flat}
    problems = [f"missing {k}" for k in sorted(names - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - names)]
    out = []
    for p, v in flat:
        k = ".".join(map(str, p))
        if k not in tensors:
            continue
        want = tuple(v.get_value().shape)
        if tuple(tensors[k].shape) != want:
            problems.append(f"{k}: shape {tuple(tensors[k].shape)}, the model has {want}")
        else:
            out.append((p, v.replace(jnp.asarray(tensors[k], v.get_value().dtype))))
    if problems:
        raise ValueError(f"{path} does not match the model:\n  " + "\n  ".join(problems))
    return nnx.from_flat_state(out)


__all__ = ["MANIFEST", "WEIGHTS", "load_state", "read_manifest", "save_state", "sha256"]
