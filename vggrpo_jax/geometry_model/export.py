"""The toy geometry model as shipped (vggrpo_jax/shipped.py: fp32 safetensors + manifest).

Manifest: {"format": "vggrpo_geometry/1", "model": Any4DConfig fields, "config": the training config, "steps",
"data": {dataset, train / held-out seeds, image size, views}, "heldout": metrics, "parameters", "sha256", "bytes"}.
`load_model(dir)` rebuilds the Any4D from the manifest and fills it (checks in shipped.load_state).
"""

from __future__ import annotations

from typing import Any, Mapping

from flax import nnx

from vggrpo_jax.models.any4d import Any4D, Any4DConfig
from vggrpo_jax.shipped import load_state, save_state
from vggrpo_jax.shipped import read_manifest as _read

FORMAT = "vggrpo_geometry/1"


def any4d_config_from(fields: Mapping[str, Any]) -> Any4DConfig:
    """Any4DConfig from a JSON/ConfigDict mapping (lists become tuples; dtypes stay fp32)."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields).items()}
    unknown = set(kw) - set(Any4DConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"model config: unknown Any4DConfig fields {sorted(unknown)}")
    return Any4DConfig(**kw)


def save_model(directory: str, model: nnx.Module, model_fields: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
    return save_state(directory, nnx.state(model), FORMAT, {"model": dict(model_fields), **dict(info)})


def read_manifest(directory: str) -> dict:
    return _read(directory, FORMAT)


def load_model(directory: str) -> Any4D:
    """The shipped Any4D of `directory`, ready: call it on (B, N, 3, H, W) RGB in [0, 1]."""
    manifest = read_manifest(directory)
    config = any4d_config_from(manifest["model"])
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Any4D(config, nnx.Rngs(0))))
    return nnx.merge(graphdef, load_state(directory, abstract, manifest))


__all__ = ["FORMAT", "any4d_config_from", "load_model", "read_manifest", "save_model"]
