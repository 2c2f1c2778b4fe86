"""The pixel-space metrics of one batch of videos, under the names the report uses, and per-sample records."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vggrpo_jax.evaluation.epipolar import EpipolarConfig, epipolar_metrics
from vggrpo_jax.evaluation.flow import FarnebackConfig, flow_metrics


def video_scores(video: np.ndarray, fps: float, epipolar: EpipolarConfig = EpipolarConfig(),
                 flow: FarnebackConfig = FarnebackConfig()) -> dict[str, np.ndarray]:
    """video (B, C, F, H, W) in [−1, 1] → {epi_sampson, epi_inlier_rate, epi_failed, motion_smoothness,
    dynamic_degree, flow_magnitude}, each (B,) float64 (Epi. NaN where the video failed)."""
    epi = epipolar_metrics(video, epipolar)
    out = {"epi_sampson": epi["sampson"], "epi_inlier_rate": epi["inlier_rate"], "epi_failed": epi["failed"]}
    out.update(flow_metrics(video, fps, flow))
    return out


def frame_smoothness(video: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Pixel-space analogue of e_trans: video (B, 3, F, H, W) → score (B,) float64 in [0, 1], 1 for constant-rate
    change.

    d_t = f_{t+1} − f_t (flattened frames), e = mean_t ||d_t − d_{t−1}|| / (||d_t|| + ||d_{t−1}|| + eps),
    score = 1 / (1 + e). Jerky changes (a jump, then stillness) give large e; a still video gives e = 0. On toyworld
    clips it separates jittered from smooth cameras completely (sft/mix.py calibrates its threshold on data).
    """
    v = np.asarray(video)
    if v.ndim != 5 or v.shape[2] < 3:
        raise ValueError(f"frame_smoothness needs (B, 3, F ≥ 3, H, W), got {v.shape}")
    x = np.moveaxis(v.astype(np.float64), 2, 1).reshape(v.shape[0], v.shape[2], -1)
    d = x[:, 1:] - x[:, :-1]
    a = d[:, 1:] - d[:, :-1]
    speed = np.linalg.norm(d, axis=-1)
    e = np.mean(np.linalg.norm(a, axis=-1) / (speed[:, 1:] + speed[:, :-1] + eps), axis=-1)
    return 1.0 / (1.0 + e)


def make_records(prompts: Sequence[str], seeds: Sequence[int], splits: Sequence[str],
                 scores: Mapping[str, np.ndarray]) -> list[dict]:
    """One record per sample: {"prompt", "seed", "split", metric: float…}; every score must have one value each."""
    n = len(prompts)
    if len(seeds) != n or len(splits) != n:
        raise ValueError(f"prompts, seeds and splits differ in length: {n}, {len(seeds)}, {len(splits)}")
    bad = {k: np.shape(v) for k, v in scores.items() if np.shape(v) != (n,)}
    if bad:
        raise ValueError(f"every score needs shape ({n},), got {bad}")
    return [{"prompt": str(prompts[i]), "seed": int(seeds[i]), "split": str(splits[i]),
             **{k: float(np.asarray(v)[i]) for k, v in scores.items()}} for i in range(n)]


__all__ = ["frame_smoothness", "make_records", "video_scores"]
