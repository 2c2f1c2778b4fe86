"""The toy geometry model as shipped (vggrpo_jax/shipped.py: fp32 safetensors + manifest).

Manifest: {"format": "vggrpo_geometry/1", "model": Any4DConfig fields, "config": the training config, "steps",
"data": {dataset, train / held-out seeds, image size, views}, "heldout": metrics, "parameters", "sha256", "bytes"}.
`load_model(dir)` rebuilds the Any4D from the manifest and fills it (checks in shipped.load_state).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.any4d import Any4D, Any4DConfig
from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.shipped import load_state, save_state
from vggrpo_jax.shipped import read_manifest as _read

FORMAT = "vggrpo_geometry/1"


def any4d_config_from(fields: Mapping[str, Any]) -> Any4DConfig:
    """Any4DConfig from a JSON/ConfigDict mapping (lists become tuples; dtypes stay fp32)."""
    return Any4DConfig.from_fields(fields)


def save_model(directory: str, model: nnx.Module, model_fields: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
    return save_state(directory, nnx.state(model), FORMAT, {"model": dict(model_fields), **dict(info)})


def read_manifest(directory: str) -> dict:
    return _read(directory, FORMAT)


def load_model(directory: str, *, dtype: Any = jnp.float32, lora_rank: int = 0, lora_alpha: float = 1.0,
               lora_seed: int = 0) -> Any4D:
    """The shipped Any4D of `directory`, ready: call it on (B, N, 3, H, W) RGB in [0, 1].

    dtype: the compute dtype (parameters stay fp32). lora_rank > 0 adds LoRA adapters on the trunk (the LGM's
    alignment trains them) at their identity init drawn from `lora_seed`: the model then computes exactly the shipped
    function until the adapters are trained.
    """
    manifest = read_manifest(directory)
    config = Any4DConfig.from_fields(manifest["model"], dtype=dtype, lora_rank=int(lora_rank),
                                     lora_alpha=float(lora_alpha))
    graphdef, lora, abstract = nnx.split(nnx.eval_shape(lambda: Any4D(config, nnx.Rngs(0))), LoRAParam, ...)
    if int(lora_rank) > 0:
        lora = jax.jit(lambda: nnx.state(Any4D(config, nnx.Rngs(int(lora_seed))), LoRAParam))()
    return nnx.merge(graphdef, lora, load_state(directory, abstract, manifest))


__all__ = ["FORMAT", "any4d_config_from", "load_model", "read_manifest", "save_model"]
