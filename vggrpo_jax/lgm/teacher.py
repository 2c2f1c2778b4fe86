"""The teacher Φ (Any4D on RGB frames), run once with its intermediate features exposed, and the stitched tail.

`teacher_forward` runs Φ on (B, N, 3, H, W) images and returns, besides the outputs, the residual stream entering
each candidate stitching layer ℓ (Φ_{1:ℓ}(x)), the hook-0 encoder features and every trunk tap: all the targets of
the stitching search and of the alignment fine-tuning, from a single pass.

`stitched_forward` is Φ̂_ψ = Φ_{ℓ+1:L} ∘ S_ψ: the trunk from block ℓ on, with the connector's tokens, its hook-0
features and its taps below ℓ (taps at or after ℓ come from the real trunk), then the heads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np


def output_fields(outputs: Any) -> dict[str, jax.Array]:
    """Any4DOutput → {field: array} for every array field (metadata fields are skipped)."""
    if dataclasses.is_dataclass(outputs):
        items = {f.name: getattr(outputs, f.name) for f in dataclasses.fields(outputs)}
    elif isinstance(outputs, dict):
        items = dict(outputs)
    else:
        raise TypeError(f"expected an Any4DOutput (dataclass) or dict, got {type(outputs).__name__}")
    return {k: v for k, v in items.items() if isinstance(v, (jax.Array, np.ndarray))}


def teacher_forward(any4d: Any, images: jax.Array, layers: Sequence[int]) -> dict[str, Any]:
    """Runs Φ once on images (B, N, 3, H, W) in [0, 1].

    Returns {"tokens": {ℓ: (B, N·T+1, D) entering block ℓ for ℓ in layers}, "hook0": (B, N, T, D_enc),
    "taps": {k: tap k}, "outputs": Any4DOutput, "grid": (h, w)}.
    """
    depth = int(any4d.config.trunk_depth)
    layers = sorted({int(l) for l in layers})
    if layers and not (0 <= layers[0] and layers[-1] <= depth):
        raise ValueError(f"stitching layers {layers} must lie in 0..{depth} (the trunk has {depth} blocks)")
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"teacher images must be (B, N, 3, H, W), got shape {images.shape}")
    num_views = images.shape[1]
    emb = any4d.embed(images)
    tokens = emb.tokens
    taps: dict[int, jax.Array] = {}
    feats: dict[int, jax.Array] = {}
    current = 0
    for l in layers + [depth]:
        if l > current:
            tokens, new_taps = any4d.run_blocks(tokens, current, l, num_views)
            taps.update(new_taps)
            current = l
        if l in layers:
            feats[l] = tokens
    outputs = any4d.heads(emb.hook0, taps, tokens, num_views, emb.grid, tuple(images.shape[-2:]))
    return {"tokens": feats, "hook0": emb.hook0, "taps": taps, "outputs": outputs, "grid": tuple(emb.grid)}


def stitched_forward(any4d: Any, conn: Any, stitch_layer: int, image_hw: Sequence[int]) -> Any:
    """Φ_{ℓ+1:L} ∘ S_ψ: ConnectorOutput → Any4DOutput with dense maps at image_hw."""
    depth = int(any4d.config.trunk_depth)
    if not 0 <= stitch_layer <= depth:
        raise ValueError(f"stitch layer {stitch_layer} is outside 0..{depth}")
    tokens, taps = conn.tokens, {}
    if stitch_layer < depth:
        tokens, taps = any4d.run_blocks(tokens, stitch_layer, depth, conn.num_views)
    missing = [k for k in any4d.config.tap_layers if k not in taps and k not in conn.taps]
    if missing:
        raise ValueError(f"stitched forward at ℓ={stitch_layer}: no features for taps {missing}")
    merged = dict(taps)
    for k, v in conn.taps.items():
        if k not in merged:
            merged[k] = v
    return any4d.heads(conn.hook0, merged, tokens, conn.num_views, conn.grid, tuple(int(x) for x in image_hw))


__all__ = ["output_fields", "stitched_forward", "teacher_forward"]
