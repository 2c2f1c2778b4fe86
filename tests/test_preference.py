"""Preference-pair ranking for the DPO baselines: the pair rule, and VideoGPA's reprojection score on toyworld."""

import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.data.toyworld import clip_geometry, render_clip
from vggrpo_jax.evaluation.preference import (EPIPOLAR_DPO, VIDEOGPA, PairRule, camera_motion, reprojection_score,
                                              select_pair)


def test_select_pair_best_against_worst():
    assert select_pair([3.0, 1.0, 5.0, 2.0], EPIPOLAR_DPO) == (1, 2)  # lower Sampson wins
    assert select_pair([3.0, 1.0, 5.0, 2.0], PairRule(higher_is_better=True)) == (2, 1)
    assert select_pair([3.0, np.nan, 5.0], EPIPOLAR_DPO) == (0, 2)  # a failed Epi. is not eligible
    assert select_pair([np.nan, 1.0], EPIPOLAR_DPO) is None
    assert select_pair([2.0, 2.0, 2.0], EPIPOLAR_DPO) is None  # nothing to prefer
    assert select_pair([1.0, 1.05], PairRule(higher_is_better=False, min_gap=0.1)) is None
    assert select_pair([1.0, 1.2], PairRule(higher_is_better=False, min_gap=0.1)) == (0, 1)
    assert select_pair([1.0, 3.0], PairRule(higher_is_better=False, winner_threshold=0.5)) is None
    assert select_pair([1.0, 1.0, 3.0], EPIPOLAR_DPO) == (0, 2)  # ties: the lowest index, deterministically


def test_select_pair_motion_filter():
    # The most consistent sample is the still one: VideoGPA drops it before ranking.
    assert select_pair([0.0, 0.2, 0.5], VIDEOGPA, motion=[0.0, 0.3, 0.4]) == (1, 2)
    with pytest.raises(ValueError, match="motion"):
        select_pair([0.0, 0.2], VIDEOGPA)
    with pytest.raises(ValueError, match="shape"):
        select_pair([0.0, 0.2], VIDEOGPA, motion=[1.0])


def _batch(geoms):
    import jax  # noqa: PLC0415

    return jax.tree.map(lambda *x: jnp.stack(x), *geoms)


def test_reprojection_score_ranks_the_consistent_geometry_first():
    clip = render_clip(3, num_frames=5, height=32, width=32, dynamic_prob=0.0, camera_motions=("orbit",))
    exact = clip_geometry(clip, flow="none")
    # One view's depth (and its points) 15% too far: the views no longer agree.
    bad_depth = exact.depth.at[2].multiply(1.15)
    cam = exact.c2w[2]
    bad_pts = exact.points.at[2].set(cam[:3, 3] + 1.15 * (exact.points[2] - cam[:3, 3]))
    broken = exact.replace(depth=bad_depth, points=bad_pts)
    still = exact.replace(c2w=jnp.broadcast_to(exact.c2w[:1], exact.c2w.shape))
    scores = np.asarray(reprojection_score(_batch([exact, broken])))
    assert scores[1] > 1.5 * scores[0], scores  # measured 0.031 (z-buffer discretisation at 32²) vs 0.065
    assert select_pair(scores, VIDEOGPA, motion=np.asarray(camera_motion(_batch([exact, broken])))) == (0, 1)
    motion = np.asarray(camera_motion(_batch([exact, still])))
    assert motion[1] == 0.0 and motion[0] > 0.1
