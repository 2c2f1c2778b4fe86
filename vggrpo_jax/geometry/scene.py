"""SceneGeometry: the per-view geometry a geometry model (Any4D, the LGM) predicts for one clip."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SceneGeometry:
    """Per-view geometry of a clip of N views (optionally with leading batch dims ``...``).

    Attributes:
      c2w: (..., N, 4, 4) camera-to-world poses, OpenCV camera axes (x right, y down, z forward).
      intrinsics: (..., N, 3, 3) pinhole K in pixels of the H x W maps (pixel centres at +0.5).
      depth: (..., N, H, W) z-depth in each camera frame; non-finite or <= 0 means invalid.
      points: (..., N, H, W, 3) world coordinates of each pixel's surface point.
      conf: (..., N, H, W) confidence (higher is better) or None.
      scene_flow: (..., N, H, W, 3) world-frame 3D scene flow or None. Convention (Any4D's): ``scene_flow[k]`` lives on
        VIEW 0's pixel grid and moves view 0's points to their positions at time k (so ``scene_flow[0]`` ~ 0).
        ``vggrpo_jax.rewards`` also accepts a per-view convention; see ``reprojection_consistency``.
    """

    c2w: jax.Array
    intrinsics: jax.Array
    depth: jax.Array
    points: jax.Array
    conf: Optional[jax.Array] = None
    scene_flow: Optional[jax.Array] = None

    @property
    def num_views(self) -> int:
        return self.depth.shape[-3]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.depth.shape[-2:])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.depth.shape[:-3])

    def validate(self) -> "SceneGeometry":
        """Raise ValueError naming the first inconsistent field; return self so calls can be chained."""
        d = self.depth
        if d.ndim < 3:
            raise ValueError(f"SceneGeometry.depth must have shape (..., N, H, W), got {tuple(d.shape)}")
        lead, (N, H, W) = tuple(d.shape[:-3]), tuple(d.shape[-3:])
        expected = {
            "c2w": lead + (N, 4, 4),
            "intrinsics": lead + (N, 3, 3),
            "points": lead + (N, H, W, 3),
            "conf": lead + (N, H, W),
            "scene_flow": lead + (N, H, W, 3),
        }
        for name, shape in expected.items():
            x = getattr(self, name)
            if x is None:
                if name in ("conf", "scene_flow"):
                    continue
                raise ValueError(f"SceneGeometry.{name} is required")
            if tuple(x.shape) != shape:
                raise ValueError(
                    f"SceneGeometry.{name} has shape {tuple(x.shape)}, expected {shape} "
                    f"(from depth {tuple(d.shape)}: batch {lead}, N={N}, H={H}, W={W})"
                )
        for name in ("c2w", "intrinsics", "depth", "points", "conf", "scene_flow"):
            x = getattr(self, name)
            if x is not None and not jnp.issubdtype(x.dtype, jnp.floating):
                raise ValueError(f"SceneGeometry.{name} must be floating point, got {x.dtype}")
        return self
