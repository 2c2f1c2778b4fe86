"""Toyworld: geometry self-consistency (depth vs points vs cameras), scene flow onto moved objects, determinism,
captions, grain source."""
import dataclasses

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.data.toyworld import (
    COLORS,
    SHAPES,
    ToyworldConfig,
    ToyworldSource,
    clip_geometry,
    make_prompts,
    render_clip,
)
from vggrpo_jax.geometry import project, unproject_depth

CFG = ToyworldConfig(num_frames=5, height=24, width=32, dynamic_prob=1.0, speed_range=(0.1, 0.15))


@pytest.fixture(scope="module")
def clip():
    return render_clip(11, config=CFG)


def test_shapes_and_ranges(clip):
    F, H, W = 5, 24, 32
    assert clip["video"].shape == (F, H, W, 3) and clip["video"].dtype == np.float32
    assert clip["video"].min() >= 0 and clip["video"].max() <= 1
    for k, shp in [("c2w", (F, 4, 4)), ("intrinsics", (F, 3, 3)), ("depth", (F, H, W)), ("points", (F, H, W, 3)),
                   ("scene_flow", (F, H, W, 3)), ("scene_flow_per_view", (F, H, W, 3)), ("dynamic_mask", (F, H, W)),
                   ("valid", (F, H, W))]:
        assert clip[k].shape == shp, k
    assert clip["valid"].mean() > 0.5 and np.all(clip["depth"][clip["valid"]] > 0)
    np.testing.assert_allclose(clip["c2w"][:, :3, :3] @ np.swapaxes(clip["c2w"][:, :3, :3], 1, 2),
                               np.broadcast_to(np.eye(3), (F, 3, 3)), atol=1e-5)


def test_depth_agrees_with_points_through_cameras(clip):
    v = clip["valid"]
    xy, z = project(jnp.asarray(clip["points"]), jnp.asarray(clip["c2w"])[:, None, None],
                    jnp.asarray(clip["intrinsics"])[:, None, None])
    ys, xs = np.mgrid[: v.shape[1], : v.shape[2]]
    np.testing.assert_allclose(np.asarray(z)[v], clip["depth"][v], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(xy[..., 0])[v], np.broadcast_to(xs + 0.5, v.shape)[v], atol=2e-3)
    np.testing.assert_allclose(np.asarray(xy[..., 1])[v], np.broadcast_to(ys + 0.5, v.shape)[v], atol=2e-3)
    pts = unproject_depth(jnp.asarray(clip["depth"]), jnp.asarray(clip["c2w"]), jnp.asarray(clip["intrinsics"]))
    np.testing.assert_allclose(np.asarray(pts)[v], clip["points"][v], atol=1e-4)
    # Ground points lie on z = 0.
    ground = clip["object_id"] == -1
    np.testing.assert_allclose(clip["points"][..., 2][ground], 0.0, atol=1e-4)


def _on_surface(p, j, clip, frame):
    """Distance of world points p (M, 3) from object j's surface at ``frame``."""
    c = clip["object_center"][j] + frame * clip["object_vel"][j]
    if clip["object_shape"][j] == 1:
        return np.abs(np.linalg.norm(p - c, axis=-1) - clip["object_sphere_r"][j])
    cy, sy = np.cos(clip["object_yaw"][j]), np.sin(clip["object_yaw"][j])
    d = p - c
    local = np.stack([cy * d[:, 0] + sy * d[:, 1], -sy * d[:, 0] + cy * d[:, 1], d[:, 2]], -1)
    # On a box surface: max over axes of |local| / half == 1.
    return np.abs(np.max(np.abs(local) / clip["object_half"][j], -1) - 1) * clip["object_half"][j].min()


def test_scene_flow_carries_frame0_points_onto_moved_objects(clip):
    ids0 = clip["object_id"][0]
    moving_ids = [j for j in range(len(clip["object_moving"])) if clip["object_moving"][j] and np.any(ids0 == j)]
    assert moving_ids, "the test clip must show a moving object in frame 0"
    for k in range(1, clip["depth"].shape[0]):
        for j in moving_ids:
            m = ids0 == j
            p0 = clip["points"][0][m]
            moved = p0 + clip["scene_flow"][k][m]
            assert _on_surface(p0, j, clip, 0).max() < 1e-4
            assert _on_surface(moved, j, clip, k).max() < 1e-4
            assert np.linalg.norm(moved - p0, axis=-1).min() > 0.09 * k  # really moved (speed >= 0.1 per frame)
        # Static surfaces and sky have zero flow.
        static = ~np.isin(ids0, moving_ids)
        assert np.all(clip["scene_flow"][k][static] == 0)
    assert np.all(clip["scene_flow"][0] == 0)
    # Per-view flow and dynamic masks: on each frame's own grid.
    for k in range(clip["depth"].shape[0]):
        ids = clip["object_id"][k]
        dyn = np.isin(ids, np.flatnonzero(clip["object_moving"]))
        np.testing.assert_array_equal(clip["dynamic_mask"][k], dyn)
        np.testing.assert_allclose(np.linalg.norm(clip["scene_flow_per_view"][k], axis=-1) > 0, dyn)


def test_deterministic_from_seed(clip):
    again = render_clip(11, config=CFG)
    for k in ("video", "depth", "points", "c2w", "scene_flow"):
        np.testing.assert_array_equal(again[k], clip[k])
    assert again["caption"] == clip["caption"]
    other = render_clip(12, config=CFG)
    assert not np.array_equal(other["video"], clip["video"])


def test_caption_names_objects_and_motion(clip):
    cap = clip["caption"]
    for c, s in zip(clip["object_color"], clip["object_shape"]):
        assert f"{list(COLORS)[c]} {SHAPES[s]}" in cap
    assert clip["camera_motion"] in {"orbit", "dolly", "pan", "crane"}
    word = {"orbit": "orbits", "dolly": "dollies", "pan": "pans", "crane": "cranes"}[clip["camera_motion"]]
    assert word in cap and "slide" in cap
    assert make_prompts(3, seed=10, config=CFG)[1] == cap
    static = render_clip(11, config=ToyworldConfig(num_frames=5, height=24, width=32, dynamic_prob=0.0))
    assert "nothing in the scene moves" in static["caption"] and not static["dynamic_mask"].any()
    assert np.all(static["scene_flow"] == 0)


def test_jitter_changes_only_the_camera(clip):
    from dataclasses import replace

    shaky = render_clip(11, config=replace(CFG, jitter=0.02))
    np.testing.assert_array_equal(shaky["object_center"], clip["object_center"])
    step = lambda c: np.linalg.norm(np.diff(np.diff(c["c2w"][:, :3, 3], axis=0), axis=0), axis=-1).mean()
    assert step(shaky) > 5 * step(clip)
    assert shaky["caption"] == clip["caption"]  # captions never describe the jitter


def test_min_moving():
    none = render_clip(11, config=ToyworldConfig(num_frames=1, height=8, width=8, dynamic_prob=0.0))
    one = render_clip(11, config=ToyworldConfig(num_frames=1, height=8, width=8, dynamic_prob=0.0, min_moving=1))
    assert not none["object_moving"].any() and one["object_moving"].sum() == 1
    np.testing.assert_array_equal(none["object_center"], one["object_center"])
    with pytest.raises(ValueError, match="min_moving"):
        ToyworldConfig(min_moving=4)


def test_grain_source_and_geometry():
    src = ToyworldSource(3, CFG, base_seed=10)
    assert len(src) == 3
    rec = src[1]
    assert all(isinstance(v, np.ndarray) for v in rec.values())
    assert str(rec["caption"]) == render_clip(11, config=CFG)["caption"]
    ds = grain.MapDataset.source(src)
    np.testing.assert_array_equal(ds[1]["depth"], rec["depth"])
    with pytest.raises(IndexError):
        src[3]
    g = clip_geometry(rec, "any4d")
    assert g.num_views == 5 and g.scene_flow is not None


def test_bad_config():
    with pytest.raises(ValueError, match="camera_motions"):
        ToyworldConfig(camera_motions=("spin",))
    with pytest.raises(ValueError, match="num_objects"):
        ToyworldConfig(num_objects=0)
    with pytest.raises(ValueError, match="checker_size"):
        ToyworldConfig(checker_size=0.0)
    with pytest.raises(ValueError, match="seed"):
        render_clip(-1, config=CFG)
    with pytest.raises(ValueError, match="flow"):
        clip_geometry(render_clip(0, config=CFG), "forward")


def test_supersample_antialiases_colour_only(clip):
    """4² rays per pixel: geometry is the pixel-centre ray's, colour is the mean of the sub-pixel colours, so it is
    unchanged inside flat regions and blended only at edges."""
    ss = render_clip(11, config=dataclasses.replace(CFG, supersample=4))
    for k in ("depth", "points", "object_id", "c2w", "scene_flow"):
        np.testing.assert_array_equal(ss[k], clip[k])
    diff = np.abs(ss["video"] - clip["video"]).max(-1)
    assert 0.02 < np.mean(diff > 1e-4) < 0.6  # edges changed, interiors not
    # The 1-ray render at 4× resolution, box-filtered, is the same picture.
    big = render_clip(11, config=dataclasses.replace(CFG, height=4 * CFG.height, width=4 * CFG.width))
    boxed = big["video"].reshape(CFG.num_frames, CFG.height, 4, CFG.width, 4, 3).mean((2, 4))
    np.testing.assert_allclose(ss["video"], boxed, atol=1e-5)


def test_checker_contrast_scales_the_floor_about_its_mean(clip):
    soft = render_clip(11, config=dataclasses.replace(CFG, checker_contrast=0.3))
    ground = clip["object_id"] == -1
    full, low = clip["video"][ground], soft["video"][ground]
    np.testing.assert_allclose(low - low.mean(0), 0.3 * (full - full.mean(0)), atol=2e-2)
    np.testing.assert_array_equal(soft["video"][~ground], clip["video"][~ground])
    with pytest.raises(ValueError, match="checker_contrast"):
        ToyworldConfig(checker_contrast=0.0)
    with pytest.raises(ValueError, match="supersample"):
        ToyworldConfig(supersample=0)


def test_object_scale_grows_the_objects_and_defaults_keep_the_world():
    default = render_clip(11, config=dataclasses.replace(CFG, object_scale=1.0, ring_radius=(0.5, 1.8)))
    np.testing.assert_array_equal(default["video"], render_clip(11, config=CFG)["video"])
    seeds = range(20, 28)
    frac = lambda cfg: np.mean([(render_clip(s, config=cfg)["object_id"] >= 0).mean() for s in seeds])  # noqa: E731
    assert frac(dataclasses.replace(CFG, object_scale=1.5, ring_radius=(0.9, 1.7))) > 1.5 * frac(CFG)
    with pytest.raises(ValueError, match="object_scale"):
        ToyworldConfig(object_scale=0.0)
    with pytest.raises(ValueError, match="ring_radius"):
        ToyworldConfig(ring_radius=(2.0, 1.0))
