"""VGGRPO rewards (pure functions of geometry) and GRPO group advantages."""
from vggrpo_jax.rewards.advantages import group_advantages, standardize_groups
from vggrpo_jax.rewards.motion import MotionSmoothness, motion_smoothness
from vggrpo_jax.rewards.reprojection import ReprojectionConsistency, reprojection_consistency
from vggrpo_jax.rewards.options import RewardOptions, geometry_rewards
from vggrpo_jax.rewards.summary import finite_stats

__all__ = [
    "MotionSmoothness",
    "ReprojectionConsistency",
    "RewardOptions",
    "finite_stats",
    "geometry_rewards",
    "group_advantages",
    "motion_smoothness",
    "reprojection_consistency",
    "standardize_groups",
]
