"""Evaluation metrics beside the rewards: Epi. (SIFT + RANSAC + Sampson), VBench-style flow proxies, win rates and
the report writer. Pure NumPy/OpenCV functions on videos (B, C, F, H, W) in [−1, 1]; geometry-model rewards come
from `rewards/` via the evaluator. (`vggrpo_jax.metrics` is the metric *writer*, a different thing.)"""

from vggrpo_jax.evaluation.epipolar import EpipolarConfig, epipolar_metrics, sampson_distance
from vggrpo_jax.evaluation.flow import FarnebackConfig, flow_metrics
from vggrpo_jax.evaluation.report import METRICS, compare, summarize, write_report
from vggrpo_jax.evaluation.scores import frame_smoothness, make_records, video_scores
from vggrpo_jax.evaluation.winrate import WinRate, win_rate, win_rates

__all__ = ["METRICS", "EpipolarConfig", "FarnebackConfig", "WinRate", "compare", "epipolar_metrics", "flow_metrics",
           "frame_smoothness", "make_records", "sampson_distance", "summarize", "video_scores", "win_rate",
           "win_rates", "write_report"]
