"""The one reward assembly: typed options for both rewards and the function every caller (GRPO trainer, GRPO
evaluator, LGM evaluation) scores a SceneGeometry with.

The field names of `RewardOptions` are the keyword parameters of `reprojection_consistency` and `motion_smoothness`
(tests/test_rewards_options.py holds this), and the config keys use the same names (`config.rewards.normalize`,
`config.rewards.stride`, LGM `config.eval.reward.stride`), so an option is spelled one way from the command line to
the function.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Iterable, Literal, Mapping, Optional

import jax

from vggrpo_jax.geometry.scene import SceneGeometry
from vggrpo_jax.rewards.motion import motion_smoothness
from vggrpo_jax.rewards.reprojection import reprojection_consistency


@dataclasses.dataclass(frozen=True)
class RewardOptions:
    """Options of r_geo (reprojection_consistency) and r_motion (motion_smoothness); see those for their meaning."""

    # reprojection_consistency
    top_k: int = 3
    leave_one_out: bool = True
    normalize: bool = True
    stride: int = 1
    conf_quantile: float = 0.1
    min_conf: Optional[float] = None
    flow_threshold: float = 0.01
    flow_convention: Literal["any4d", "per_view"] = "any4d"
    dynamic_depth_tol: float = 0.05
    dynamic_dilate: int = 1
    use_scene_flow: bool = True
    view_batch_size: Optional[int] = None
    zbuffer: str = "scatter"
    # motion_smoothness
    eps: float = 1e-8

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | Any, where: str = "rewards",
                    other_keys: Iterable[str] = ()) -> "RewardOptions":
        """From a config block whose keys are fields (plus `other_keys`, which belong to the caller and are skipped);
        any other key raises ValueError naming it."""
        d = dict(block.to_dict() if hasattr(block, "to_dict") else block)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields - set(other_keys))
        if unknown:
            raise ValueError(f"config.{where}: unknown reward options {unknown}; known: {sorted(fields)}")
        return cls(**{k: v for k, v in d.items() if k in fields})

    def kwargs_for(self, fn: Any) -> dict[str, Any]:
        """The fields that are keyword parameters of `fn`."""
        params = inspect.signature(fn).parameters
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in params}


def geometry_rewards(geometry: SceneGeometry, options: RewardOptions | Any) -> dict[str, jax.Array]:
    """SceneGeometry with batch dim B → {"motion": (B,), "geo": (B,), "e_trans": (B,), "e_rot": (B,)} (float32).

    `options`: RewardOptions, or a config block of its fields (a GRPO `config.rewards`: weights and adv_clip, which
    belong to the advantages, are skipped).
    """
    if not isinstance(options, RewardOptions):
        options = RewardOptions.from_config(options, other_keys=("weights", "adv_clip"))
    motion = motion_smoothness(geometry.c2w, **options.kwargs_for(motion_smoothness))
    geo = reprojection_consistency(geometry, **options.kwargs_for(reprojection_consistency))
    return {"motion": motion.reward, "geo": geo.reward, "e_trans": motion.e_trans, "e_rot": motion.e_rot}


__all__ = ["RewardOptions", "geometry_rewards"]
