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


__all__ = ["make_records", "video_scores"]
