"""The RGB path as one callable: normalised latents → VAE decode → view frames → Any4D → SceneGeometry.

It is the baseline the LGM replaces (the "RGB-based reward" of the paper's Table 2e) and the evaluator of the LGM's
agreement and robustness. It uses exactly the LGM's correspondence: view k ↔ video frame by the view rule, frames
resized so the teacher's 14-px patch grid equals the connector's token grid, maps at (14·h, 14·w). The teacher is
the *base* Any4D: LoRA adapters, if the model carries them for the LGM tail, are switched off here.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from vggrpo_jax.lgm.correspondence import Correspondence, make_correspondence, teacher_images
from vggrpo_jax.lgm.model import scene_geometry
from vggrpo_jax.models.lora import lora_disabled


class RGBGeometryPath(nnx.Module):
    """decode → pick → resize → Φ.

    Args:
      vae: WanVAE (decode + denormalize_latents).
      any4d: the Any4D teacher.
      spatial_stride: the connector's spatial stride c (token grid = ceil(H'/c)), so both paths see the same grid.
      view_frame_rule: see correspondence.py.
    """

    def __init__(self, vae: Any, any4d: Any, *, spatial_stride: int = 2, view_frame_rule: str = "last"):
        self.vae = vae
        self.any4d = any4d
        self.spatial_stride = int(spatial_stride)
        self.view_frame_rule = view_frame_rule

    def correspondence(self, latent_shape) -> Correspondence:
        return make_correspondence(
            latent_shape,
            temporal_stride=self.vae.config.temporal_stride,
            spatial_stride=self.spatial_stride,
            patch_size=self.any4d.config.patch_size,
            rule=self.view_frame_rule,
        )

    def decode(self, latents: jax.Array) -> jax.Array:
        """Normalised latents (B, C, F', H', W') → video (B, 3, F, H, W) in [−1, 1]."""
        return self.vae.decode(self.vae.denormalize_latents(latents))

    def images(self, latents: jax.Array) -> jax.Array:
        """Normalised latents → teacher input (B, N, 3, 14h, 14w) in [0, 1]."""
        return teacher_images(self.decode(latents), self.correspondence(latents.shape))

    def outputs(self, latents: jax.Array) -> Any:
        images = self.images(latents)
        with lora_disabled(self.any4d):
            return self.any4d(images)

    def __call__(self, latents: jax.Array) -> Any:
        """Normalised latents (B, C, F', H', W') → SceneGeometry (B, N = F' views)."""
        return scene_geometry(self.any4d, self.outputs(latents))


__all__ = ["RGBGeometryPath"]
