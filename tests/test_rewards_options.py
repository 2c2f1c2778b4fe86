"""One reward assembly: RewardOptions' fields are exactly the keyword parameters (names and defaults) of the two
reward functions, the config keys use those names, and geometry_rewards passes them through."""

import dataclasses
import inspect

import numpy as np
import pytest

from vggrpo_jax.config import base_config
from vggrpo_jax.rewards import RewardOptions, geometry_rewards, motion_smoothness, reprojection_consistency


def _keyword_params(fn, skip):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if n not in skip}


def test_fields_are_the_reward_functions_parameters():
    expected = {**_keyword_params(reprojection_consistency, {"geometry"}), **_keyword_params(motion_smoothness, {"c2w"})}
    fields = {f.name: f.default for f in dataclasses.fields(RewardOptions)}
    assert fields == expected


def test_config_keys_are_field_names():
    c = base_config()
    opts = RewardOptions.from_config(c.rewards, other_keys=("weights", "adv_clip"))
    assert opts.normalize is True and opts.stride == 1
    with pytest.raises(ValueError, match=r"config.rewards: unknown reward options \['relative'\]"):
        RewardOptions.from_config({"relative": True})
    from vggrpo_jax.lgm.config import lgm_base_config

    assert RewardOptions.from_config(lgm_base_config().eval.reward, where="eval.reward").stride == 4


def test_geometry_rewards_pass_the_options_through():
    import jax

    from vggrpo_jax.data.toyworld import ToyworldConfig, clip_geometry, render_clip

    clip = render_clip(3, config=ToyworldConfig(num_frames=5, height=32, width=32, dynamic_prob=0.0))
    g = jax.tree.map(lambda x: x[None], clip_geometry(clip, "none"))  # a batch of one clip
    for opts in (RewardOptions(), RewardOptions(normalize=False, stride=2, top_k=1, use_scene_flow=False)):
        got = geometry_rewards(g, opts)
        geo = reprojection_consistency(g, top_k=opts.top_k, normalize=opts.normalize, stride=opts.stride,
                                       use_scene_flow=opts.use_scene_flow)
        np.testing.assert_array_equal(np.asarray(got["geo"]), np.asarray(geo.reward))
        np.testing.assert_array_equal(np.asarray(got["motion"]), np.asarray(motion_smoothness(g.c2w).reward))
    # The two settings differ (normalize=False is in depth units, top_k=1 the single worst view).
    assert float(geometry_rewards(g, RewardOptions())["geo"][0]) != float(
        geometry_rewards(g, RewardOptions(normalize=False, top_k=1))["geo"][0])
