"""The base-model mix measurement (sft/mix.py): the frame-smoothness score separates jittered from smooth toyworld
cameras, and the calibrated threshold is the most accurate split."""
import numpy as np
import pytest

from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.data.toyworld_clips import load_split
from vggrpo_jax.evaluation import frame_smoothness
from vggrpo_jax.sft.mix import best_threshold, summary


def test_best_threshold_is_the_most_accurate_split():
    s = np.array([0.50, 0.52, 0.55, 0.61, 0.58, 0.66, 0.70])
    y = np.array([True, True, True, False, True, False, False])
    t, acc = best_threshold(s, y)
    assert 0.58 < t < 0.61 and acc == 1.0
    y2 = y.copy()
    y2[0] = False  # one smooth clip among the jittered scores: the best split now misclassifies exactly one
    assert best_threshold(s, y2)[1] == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="both"):
        best_threshold(s, np.ones(7, bool))


def test_summary_fraction_below_threshold():
    out = summary(np.array([0.1, 0.2, 0.3, 0.4]), 0.25)
    assert out["jittery_fraction"] == 0.5 and out["n"] == 4 and out["quantiles"]["0.5"] == pytest.approx(0.25)


def test_frame_smoothness_separates_jittered_toyworld_clips():
    split = load_split("train", 24, source="render", data_config="zoo")
    clips = [split[i] for i in range(len(split))]
    scores = frame_smoothness(np.stack([T.video_to_model(c["video"]) for c in clips]))
    jittered = np.array([c["jittered"] for c in clips])
    assert 0 < jittered.sum() < len(clips)
    assert scores[jittered].max() < scores[~jittered].min()  # measured on 64 clips: 0.564 < 0.605
    assert best_threshold(scores, jittered)[1] == 1.0
