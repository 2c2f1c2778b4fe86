"""A fully fine-tuned (or pretrained) Wan DiT as shipped (vggrpo_jax/shipped.py: fp32 safetensors + manifest).

Manifest: {"format": "vggrpo_dit/1", "model": the architecture (diffusers WanTransformer3DModel kwargs),
"scan_layers": the parameter layout, "config": the training config, "steps", "data", "heldout", sha256, bytes}.
"""

from __future__ import annotations

from typing import Any, Mapping

from flax import nnx

from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.shipped import load_state, read_manifest, save_state

FORMAT = "vggrpo_dit/1"


def save_dit(directory: str, params: nnx.State, config: WanConfig, info: Mapping[str, Any]) -> dict:
    return save_state(directory, params, FORMAT, {"model": config.to_diffusers_config(),
                                                  "scan_layers": bool(config.scan_layers), **dict(info)})


def load_dit(directory: str, **runtime: Any) -> WanTransformer:
    """The shipped DiT (fp32 unless `runtime` says otherwise); call it as model(x, t, text_emb)."""
    manifest = read_manifest(directory, FORMAT)
    runtime.setdefault("scan_layers", manifest["scan_layers"])
    config = WanConfig.from_diffusers_config(manifest["model"], **runtime)
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: WanTransformer(config, nnx.Rngs(0))), nnx.Param, ...)
    return nnx.merge(graphdef, load_state(directory, params, manifest), rest)


__all__ = ["FORMAT", "load_dit", "save_dit"]
