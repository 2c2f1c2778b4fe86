"""Any4D in JAX: DINOv2 encoder, alternating-attention trunk, DPT geometry and scene-flow heads, pose and scale heads.

See `model.py` for the layer-addressable API (embed → run_blocks → heads) and what a caller entering the trunk at
layer ℓ must supply.
"""

from vggrpo_jax.models.any4d.config import Any4DConfig
from vggrpo_jax.models.any4d.model import Any4D, Any4DEmbedding, Any4DOutput, to_scene_geometry

__all__ = ["Any4D", "Any4DConfig", "Any4DEmbedding", "Any4DOutput", "to_scene_geometry"]
