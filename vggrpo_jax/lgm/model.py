"""The Latent Geometry Model as one callable: normalised Wan latents (B, C, F', H', W') → SceneGeometry.

    LGM(z) = to_scene_geometry(Φ_{ℓ̂+1:L}(S_ψ(z)))

N = F' views (view k stands for video frame 4k, see lgm/correspondence.py); dense maps at the teacher resolution
(14·h, 14·w) with (h, w) the connector's token grid; cameras camera-to-world, OpenCV axes, world = view 0.

Saved as a directory:
    lgm.json          format, ℓ̂, connector config, latent channels, the Any4D sizes it was stitched to, view rule
    connector/        orbax params of S_ψ
    lora/             orbax LoRA params of the Any4D tail (only when the tail carries adapters)
The Any4D base weights are not part of it: `load_lgm` takes the (converted) Any4D model and checks its sizes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
from flax import nnx

from vggrpo_jax.checkpoint import restore_params, save_params
from vggrpo_jax.errors import InputError, PathNotFoundError, read_json
from vggrpo_jax.lgm.connector import Connector, ConnectorConfig
from vggrpo_jax.lgm.correspondence import VIEW_FRAME_RULES, teacher_hw, view_frame_indices
from vggrpo_jax.lgm.teacher import stitched_forward
from vggrpo_jax.models.any4d import to_scene_geometry
from vggrpo_jax.models.lora import LoRAParam

FORMAT = "vggrpo_lgm/1"
_ANY4D_KEYS = ("trunk_dim", "encoder_dim", "trunk_depth", "tap_layers", "patch_size", "lora_rank")


def any4d_signature(config: Any) -> dict:
    """The Any4D sizes an LGM depends on (checked when loading)."""
    out = {}
    for k in _ANY4D_KEYS:
        v = getattr(config, k)
        out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def scene_geometry(any4d: Any, outputs: Any) -> Any:
    """Any4DOutput → SceneGeometry through the Any4D model's own conversion (z-depth, K from rays)."""
    del any4d  # the conversion is a function of the outputs alone
    return to_scene_geometry(outputs)


class LatentGeometryModel(nnx.Module):
    """Φ̂_ψ = Φ_{ℓ̂+1:L} ∘ S_ψ.

    Args:
      connector: the fitted S_ψ (its stitch_layer is ℓ̂).
      any4d: the Any4D model whose tail (blocks ℓ̂..L−1 and heads) is used; may carry LoRA adapters.
      view_frame_rule, temporal_stride: the correspondence (recorded in the saved json; see correspondence.py).
    """

    def __init__(self, connector: Connector, any4d: Any, *, view_frame_rule: str = "last", temporal_stride: int = 4):
        if view_frame_rule not in VIEW_FRAME_RULES:
            raise ValueError(f"view_frame_rule {view_frame_rule!r} is not one of {VIEW_FRAME_RULES}")
        cfg = any4d.config
        if connector.trunk_dim != cfg.trunk_dim or connector.encoder_dim != cfg.encoder_dim:
            raise ValueError(
                f"connector widths (trunk {connector.trunk_dim}, encoder {connector.encoder_dim}) do not match "
                f"Any4D (trunk {cfg.trunk_dim}, encoder {cfg.encoder_dim})"
            )
        self.connector = connector
        self.any4d = any4d
        self.view_frame_rule = view_frame_rule
        self.temporal_stride = int(temporal_stride)

    @property
    def stitch_layer(self) -> int:
        return self.connector.stitch_layer

    def output_hw(self, latent_shape) -> tuple[int, int]:
        grid = self.connector.config.grid(tuple(latent_shape)[-2:])
        return teacher_hw(grid, self.any4d.config.patch_size)

    def view_frames(self, num_latent_frames: int):
        """Video frame index of each view (the view rule)."""
        return view_frame_indices(num_latent_frames, self.temporal_stride, self.view_frame_rule)

    def outputs(self, latents: jax.Array) -> Any:
        """latents (B, C, F', H', W') → Any4DOutput (N = F' views, maps at output_hw)."""
        conn = self.connector(latents)
        return stitched_forward(self.any4d, conn, self.stitch_layer, self.output_hw(latents.shape))

    def __call__(self, latents: jax.Array) -> Any:
        """latents (B, C, F', H', W') → SceneGeometry with batch dim B."""
        return scene_geometry(self.any4d, self.outputs(latents))


def save_lgm(path: str, lgm: LatentGeometryModel, extra: dict | None = None, force: bool = False) -> None:
    """Writes lgm.json + connector/ (+ lora/) under `path` (see module doc)."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "lgm.json")) and not force:
        raise FileExistsError(f"{path} already holds an LGM; pass force=True to overwrite")
    os.makedirs(path, exist_ok=True)
    conn = lgm.connector
    lora_state = nnx.state(lgm.any4d, LoRAParam)
    has_lora = len(jax.tree.leaves(lora_state)) > 0
    meta = {
        "format": FORMAT,
        "stitch_layer": conn.stitch_layer,
        "connector": conn.config.to_dict(),
        "latent_channels": conn.latent_channels,
        "any4d": any4d_signature(lgm.any4d.config),
        "view_frame_rule": lgm.view_frame_rule,
        "temporal_stride": lgm.temporal_stride,
        "has_lora": has_lora,
        **(extra or {}),
    }
    save_params(os.path.join(path, "connector"), nnx.state(conn, nnx.Param), force=force)
    if has_lora:
        save_params(os.path.join(path, "lora"), lora_state, force=force)
    tmp = os.path.join(path, "lgm.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(path, "lgm.json"))


def read_lgm_meta(path: str) -> dict:
    meta_path = os.path.join(os.path.abspath(path), "lgm.json")
    if not os.path.isfile(meta_path):
        raise PathNotFoundError(f"no LGM at {path} (missing lgm.json)")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{meta_path}: format {meta.get('format') if isinstance(meta, dict) else None!r} is not "
                         f"{FORMAT!r}")
    return meta


def load_lgm(path: str, any4d: Any) -> LatentGeometryModel:
    """Restores an LGM saved by save_lgm onto `any4d` (built with the same sizes and LoRA rank; weights loaded).

    The LoRA adapters (if any) are written into `any4d` in place.
    """
    meta = read_lgm_meta(path)
    want, have = meta["any4d"], any4d_signature(any4d.config)
    diff = {k: (want[k], have.get(k)) for k in want if want[k] != have.get(k)}
    if diff:
        raise InputError(f"{path}: the LGM was stitched to an Any4D with different sizes {{key: (saved, given)}}: {diff}")
    cfg = ConnectorConfig.from_dict(meta["connector"])
    kw = dict(
        latent_channels=int(meta["latent_channels"]), trunk_dim=any4d.config.trunk_dim,
        encoder_dim=any4d.config.encoder_dim, stitch_layer=int(meta["stitch_layer"]),
        tap_layers=tuple(any4d.config.tap_layers),
    )
    abstract = nnx.eval_shape(lambda: Connector(cfg, rngs=nnx.Rngs(0), **kw))
    graphdef, abs_params, rest = nnx.split(abstract, nnx.Param, ...)
    params = restore_params(os.path.join(path, "connector"), abs_params)
    connector = nnx.merge(graphdef, params, rest)
    if meta.get("has_lora"):
        lora_abs = nnx.state(any4d, LoRAParam)
        nnx.update(any4d, restore_params(os.path.join(path, "lora"), lora_abs))
    return LatentGeometryModel(
        connector, any4d, view_frame_rule=meta["view_frame_rule"], temporal_stride=int(meta["temporal_stride"])
    )


__all__ = ["FORMAT", "LatentGeometryModel", "any4d_signature", "load_lgm", "read_lgm_meta", "save_lgm", "scene_geometry"]
