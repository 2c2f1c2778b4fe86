"""Preference pairs for the DPO baselines: score a group of base-model samples of one prompt, keep the best and the
worst as (winner, loser).

Both public pipelines form ONE pair per prompt group — the best- and the worst-scoring sample — and drop the group
when the two are closer than `min_gap` or the winner misses a quality bar; VideoGPA also drops near-static samples
first (their geometry score is trivially good) and Epipolar-DPO drops failed measurements (its Epi. of −1).

- Epipolar-DPO: the score is Epi. (`evaluation.epipolar`, mean Sampson distance, lower is better); a failed video
  (no frame pair with ≥ 20 SIFT matches) is not eligible.
- VideoGPA: the score is a geometry-consistency error of the video under a 3D foundation model (VGGT there, the RGB
  geometry model here: decode → Any4D-architecture model → SceneGeometry), measured as the mean over ALL views of the
  leave-one-out reprojection depth error (`rewards.reprojection_consistency`, relative to the median depth; lower
  is better); `camera_motion` (camera path length over the median scene depth) is the motion filter.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from vggrpo_jax.geometry.scene import SceneGeometry
from vggrpo_jax.rewards.reprojection import reprojection_consistency


@dataclasses.dataclass(frozen=True)
class PairRule:
    """How one group's samples become a pair. Scores are per sample; `motion` (optional) is compared with
    `min_motion` to drop near-static samples before ranking."""

    higher_is_better: bool
    min_gap: float = 0.0
    winner_threshold: float | None = None  # the winner must beat this (be above it if higher_is_better, else below)
    min_motion: float | None = None

    def __post_init__(self):
        if self.min_gap < 0:
            raise ValueError(f"PairRule.min_gap must be ≥ 0, got {self.min_gap}")


EPIPOLAR_DPO = PairRule(higher_is_better=False)  # metric: epi_sampson (px)
VIDEOGPA = PairRule(higher_is_better=False, min_gap=0.0, min_motion=0.05)  # metric: reprojection error (relative)


def select_pair(scores: Sequence[float], rule: PairRule, motion: Sequence[float] | None = None
                ) -> tuple[int, int] | None:
    """scores (K,) of one prompt's K samples → (winner index, loser index), or None when no valid pair exists.

    Non-finite scores (failed measurements) and samples with motion < rule.min_motion are not eligible; among the
    rest the best is the winner and the worst the loser (the lowest index wins ties, so the choice is
    deterministic); the pair is kept only if |s_w − s_l| ≥ min_gap (and > 0) and the winner meets winner_threshold.
    """
    s = np.asarray(scores, np.float64)
    if s.ndim != 1:
        raise ValueError(f"select_pair needs one score per sample (K,), got shape {s.shape}")
    ok = np.isfinite(s)
    if rule.min_motion is not None:
        if motion is None:
            raise ValueError("this PairRule filters on motion (min_motion is set) but no motion was given")
        m = np.asarray(motion, np.float64)
        if m.shape != s.shape:
            raise ValueError(f"motion needs shape {s.shape}, got {m.shape}")
        ok &= np.isfinite(m) & (m >= rule.min_motion)
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        return None
    key = s[idx] if rule.higher_is_better else -s[idx]  # larger key = better
    order = idx[np.argsort(-key, kind="stable")]
    w, l = int(order[0]), int(order[-1])
    gap = abs(s[w] - s[l])
    if gap <= 0 or gap < rule.min_gap:
        return None
    if rule.winner_threshold is not None:
        better = s[w] > rule.winner_threshold if rule.higher_is_better else s[w] < rule.winner_threshold
        if not better:
            return None
    return w, l


def reprojection_score(geometry: SceneGeometry, **kwargs: Any) -> jnp.ndarray:
    """VideoGPA's ranking score from a model's SceneGeometry (B, N views): the mean over all N views of the
    leave-one-out reprojection depth error (B,), lower is better (+inf when a view has no valid pixel). `kwargs`
    go to `rewards.reprojection_consistency` (stride, conf_quantile, flow_threshold, use_scene_flow, …)."""
    n = geometry.depth.shape[-3]
    return -reprojection_consistency(geometry, top_k=n, **kwargs).reward


def camera_motion(geometry: SceneGeometry) -> jnp.ndarray:
    """Camera path length Σ‖c_{k+1} − c_k‖ over the median valid depth of the scene, (B,): scale-free, 0 for a
    still camera. The motion filter of the VideoGPA ranking."""
    centers = geometry.c2w[..., :3, 3]
    path = jnp.sum(jnp.linalg.norm(centers[..., 1:, :] - centers[..., :-1, :], axis=-1), axis=-1)
    d = geometry.depth
    flat = d.reshape(d.shape[: -3] + (-1,))
    med = jnp.nanmedian(jnp.where(flat > 0, flat, jnp.nan), axis=-1)
    return path / jnp.where(jnp.isfinite(med) & (med > 0), med, 1.0)


__all__ = ["EPIPOLAR_DPO", "VIDEOGPA", "PairRule", "camera_motion", "reprojection_score", "select_pair"]
