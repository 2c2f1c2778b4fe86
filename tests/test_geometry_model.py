"""The toy geometry model's pieces: exact targets, Any4D-style losses, held-out metrics, export round trip."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.data.toyworld import ToyworldConfig, render_clip
from vggrpo_jax.geometry.camera import camera_to_world
from vggrpo_jax.geometry.rotation import rotation_to_quaternion, so3_exp
from vggrpo_jax.geometry_model.data import build_cache, gather, sample_views
from vggrpo_jax.geometry_model.evaluate import clip_metrics, prediction_geometry, target_geometry
from vggrpo_jax.geometry_model.losses import geometry_loss
from vggrpo_jax.geometry_model.targets import make_targets, mirror
from vggrpo_jax.models.any4d import Any4DOutput

F, H, W, HW = 9, 32, 32, (28, 28)  # small clips: 3 views at frames 0, 4, 8 of 28×28 (2×2 patches)
SEEDS = (1, 2, 5)  # static smooth, dynamic smooth, dynamic jittered (toyworld_tfds.clip_spec)
FRAMES = np.arange(0, F, 4)


@pytest.fixture(scope="module")
def cache():
    base = ToyworldConfig(num_frames=F, height=H, width=W)
    return build_cache([T.decode(T.render_record(s, base)) for s in SEEDS], HW)


@pytest.fixture(scope="module")
def targets(cache):
    return make_targets(**gather(cache, np.arange(len(SEEDS)), np.tile(FRAMES, (len(SEEDS), 1))))


def perfect_output(tgt, scale=2.5, rot_err=None, depth_factor=1.0) -> Any4DOutput:
    """An Any4DOutput equal to the targets (metric scale `scale`), optionally with view 1 rotated by `rot_err`
    (axis-angle) and every depth multiplied by `depth_factor`."""
    c2w = tgt.c2w
    if rot_err is not None:
        c2w = c2w.at[:, 1, :3, :3].set(so3_exp(jnp.asarray(rot_err, jnp.float32)) @ c2w[:, 1, :3, :3])
    depth = tgt.depth * depth_factor
    pts_cam = tgt.rays * depth[..., None]
    pts = camera_to_world(pts_cam, c2w[:, :, None, None]) * tgt.valid[..., None]
    b = c2w.shape[0]
    return Any4DOutput(
        rays=tgt.rays, depth_along_ray=depth, depth_z=tgt.depth_z * depth_factor, pts3d_cam=pts_cam,
        cam_quats=rotation_to_quaternion(c2w[..., :3, :3]), cam_trans=c2w[..., :3, 3], c2w=c2w, pts3d=pts,
        scene_flow=tgt.flow, conf=jnp.ones_like(depth), mask=tgt.valid.astype(jnp.float32),
        metric_scale=jnp.full((b,), scale))


def test_targets_are_toyworlds_geometry_in_view0s_frame(cache, targets):
    assert cache.video.shape == (3, F) + HW + (3,) and list(cache.is_dynamic) == [False, True, True]
    assert cache.jitter[0] == 0 and cache.jitter[2] > 0
    for i, seed in enumerate(SEEDS):
        gt = render_clip(seed, config=T.clip_spec(seed).config(ToyworldConfig(num_frames=F, height=HW[0], width=HW[1])))
        c0 = jnp.asarray(gt["c2w"][0])
        world = camera_to_world(targets.points[i], c0[None, None, None])
        valid = gt["valid"][FRAMES]
        np.testing.assert_allclose(np.asarray(world)[valid], gt["points"][FRAMES][valid], atol=2e-5)
        np.testing.assert_allclose(np.asarray(c0 @ targets.c2w[i]), gt["c2w"][FRAMES], atol=2e-5)
        flow_world = np.einsum("ij,nhwj->nhwi", gt["c2w"][0][:3, :3], np.asarray(targets.flow[i]))
        np.testing.assert_allclose(flow_world, gt["scene_flow"][FRAMES], atol=1e-6)
        assert bool(np.asarray(targets.dynamic[i]).any()) == (i > 0)
    np.testing.assert_allclose(np.asarray(targets.c2w[:, 0]), np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-6)


def _reprojected_depth_error(tgt, i, k):
    """Median distance (relative to depth) between clip i's view-0 surface points and the surface view k shows at
    the pixel they project to with the targets' pose and intrinsics (nearest pixel; where the scene is static, they
    agree)."""
    p = np.asarray(tgt.points[i, 0])[np.asarray(tgt.valid[i, 0])]  # view-0 frame
    c2w, K = np.asarray(tgt.c2w[i, k]), np.asarray(tgt.intrinsics[i])
    x = (p - c2w[:3, 3]) @ c2w[:3, :3]  # into camera k
    uv = x @ K.T
    u, v = (np.floor(uv[:, j] / uv[:, 2]).astype(int) for j in (0, 1))
    h, w = tgt.depth_z.shape[-2:]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (x[:, 2] > 0)
    seen = np.asarray(tgt.points[i, k])[v[inside], u[inside]]
    hit = np.asarray(tgt.valid[i, k])[v[inside], u[inside]]
    return float(np.median(np.linalg.norm(seen - p[inside], axis=-1)[hit] / x[inside, 2][hit]))


def test_mirrored_targets_are_a_consistent_scene(cache, targets):
    """targets.mirror gives a scene whose views still agree with each other: view 0's mirrored points, moved by the
    mirrored pose and projected with the mirrored K, land where view k's mirrored depth map says (a sign or axis
    slip in the pose breaks this); rays match the mirrored K; mirroring twice is the identity."""
    flip = jnp.asarray([True, False, True])
    m, everything = mirror(targets, flip), mirror(targets, jnp.ones(3, bool))
    unconjugated = everything.replace(c2w=everything.c2w.at[:, :, :3, :3].set(targets.c2w[:, :, :3, :3]))
    unmirrored_t = everything.replace(c2w=everything.c2w.at[:, :, :3, 3].set(targets.c2w[:, :, :3, 3]))
    for i in range(3):  # measured: 0.018–0.024 for the truth (nearest-pixel lookup, a few moving pixels)
        assert _reprojected_depth_error(targets, i, 2) < 0.03
        assert _reprojected_depth_error(everything, i, 2) < 0.03
    # seed 2's camera pans (a rotation the mirror reverses), seed 5's is jittered sideways (an x translation)
    assert _reprojected_depth_error(unconjugated, 1, 2) > 0.3  # measured 0.53
    assert _reprojected_depth_error(unmirrored_t, 2, 2) > 0.06  # measured 0.083
    np.testing.assert_allclose(np.linalg.det(np.asarray(m.c2w[..., :3, :3])), 1.0, atol=1e-5)
    rays = np.asarray(m.rays[0, 1])
    np.testing.assert_allclose(rays[:, :, 0], -np.asarray(targets.rays[0, 1])[:, ::-1, 0], atol=1e-7)
    from vggrpo_jax.geometry.camera import pixel_rays
    want = np.asarray(pixel_rays(m.intrinsics[0], *HW))
    np.testing.assert_allclose(rays, want / np.linalg.norm(want, axis=-1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m.images[0]), np.asarray(targets.images[0])[..., ::-1])
    for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(targets)):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])  # clip 1 not flipped
    for a, b in zip(jax.tree.leaves(mirror(m, flip)), jax.tree.leaves(targets)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    loss, _ = geometry_loss(perfect_output(m), m)
    assert float(loss) < 2e-3


def test_sampled_views_are_deterministic_and_in_range(cache):
    a, b = sample_views(cache, 0, 7, 4, 3), sample_views(cache, 0, 7, 4, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = sample_views(cache, 0, 8, 4, 3)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert np.all(np.abs(a["frame_offsets"][:, -1]) <= F - 1) and np.all(a["frame_offsets"][:, 0] == 0)


def test_loss_vanishes_on_the_ground_truth_at_any_metric_scale(targets):
    for scale in (0.3, 2.5):
        loss, terms = geometry_loss(perfect_output(targets, scale), targets)
        for k, v in terms.items():
            assert abs(float(v)) < 2e-4, (scale, k, float(v))


def test_loss_sees_rotation_depth_and_flow_errors(targets):
    _, ok = geometry_loss(perfect_output(targets), targets)
    _, rot = geometry_loss(perfect_output(targets, rot_err=[0.0, np.deg2rad(5.0), 0.0]), targets)
    assert float(rot["rot"]) > 0.01 and float(rot["points"]) > 0.01 and float(rot["depth"]) < 0.1 * float(rot["points"])
    _, deep = geometry_loss(perfect_output(targets, depth_factor=1.1), targets)
    assert float(deep["depth"]) > 0.005 or float(deep["points"]) > 0.005
    out = perfect_output(targets)
    _, flow = geometry_loss(out.replace(scene_flow=out.scene_flow + 0.05), targets)
    assert float(flow["flow"]) > 10 * float(ok["flow"]) + 0.01


def test_clip_metrics_zero_for_truth_and_exact_for_a_known_rotation(targets):
    perfect = jax.device_get(clip_metrics(perfect_output(targets), targets))
    for k in ("rot_deg", "tdir_deg", "depth_absrel", "depth_absrel_aligned", "flow_epe"):
        assert np.all(perfect[k] < 1e-2), (k, perfect[k])
    assert np.all(perfect["mask_acc"] == 1.0)
    m = jax.device_get(clip_metrics(perfect_output(targets, rot_err=[0.0, 0.0, np.deg2rad(6.0)]), targets))
    # view 1 of 3 rotated by 6°: two of the three pairs carry the 6° error
    np.testing.assert_allclose(m["rot_deg"], 4.0, atol=0.05)
    d = jax.device_get(clip_metrics(perfect_output(targets, depth_factor=1.2), targets))
    np.testing.assert_allclose(d["depth_absrel"], 0.2, atol=1e-4)
    assert np.all(d["depth_absrel_aligned"] < 1e-4)


def test_prediction_geometry_drops_the_ambiguous_pixels(targets):
    out = perfect_output(targets)
    g = prediction_geometry(out, 0.5)
    assert np.all((np.asarray(g.depth) > 0) == np.asarray(targets.valid))
    g_all = prediction_geometry(out.replace(depth_z=out.depth_z + 1.0), None)
    assert np.all(np.asarray(g_all.depth) > 0)
    t = target_geometry(targets).validate()
    assert t.depth.shape == targets.depth.shape


def test_export_round_trip_and_sha_check(tmp_path):
    from vggrpo_jax.geometry_model.export import load_model, save_model
    from vggrpo_jax.lgm.host_init import random_any4d
    from vggrpo_jax.models.any4d import Any4DConfig

    fields = dict(encoder_dim=24, encoder_depth=1, encoder_heads=2, pos_grid=2, trunk_dim=16, trunk_depth=2,
                  trunk_heads=2, tap_layers=(0, 1), dpt_feature_dim=8, dpt_layer_dims=(4, 8, 8, 8), pose_head_dim=8,
                  scale_hidden_dim=8)
    model = random_any4d(Any4DConfig(**fields), 3)
    d = str(tmp_path / "geo")
    manifest = save_model(d, model, fields, {"steps": 0})
    assert manifest["bytes"] > 0 and len(manifest["sha256"]) == 64
    back = load_model(d)
    x = jax.random.uniform(jax.random.key(0), (1, 2, 3, 28, 28))
    np.testing.assert_array_equal(np.asarray(model(x).depth_z), np.asarray(back(x).depth_z))
    with open(f"{d}/model.safetensors", "r+b") as f:  # one flipped byte in the payload
        f.seek(-3, 2)
        b = f.read(1)
        f.seek(-3, 2)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        load_model(d)


def test_sincos_position_init_tells_patches_apart():
    """init.pos="sincos" puts a distinct, bounded position vector on every patch of the encoder's table (the CLS
    row stays 0); the default draw is DINOv2's N(0, 0.02²); an unknown option is refused by name."""
    from vggrpo_jax.errors import ConfigError
    from vggrpo_jax.geometry_model.job import init_model, sincos_positions
    from vggrpo_jax.models.any4d import Any4DConfig

    table = sincos_positions(3, 8)
    assert table.shape == (9, 8) and np.abs(table).max() <= 1.0
    gaps = np.linalg.norm(table[:, None] - table[None], axis=-1) + np.eye(9)
    assert gaps.min() > 0.1
    cfg = Any4DConfig(encoder_dim=24, encoder_depth=1, encoder_heads=2, pos_grid=3, trunk_dim=16, trunk_depth=2,
                      trunk_heads=2, tap_layers=(0, 1), dpt_feature_dim=8, dpt_layer_dims=(4, 8, 8, 8),
                      pose_head_dim=8, scale_hidden_dim=8)
    pe = np.asarray(init_model(cfg, 0, pos_init="sincos", pos_scale=0.5).encoder.model.pos_embed[...])[0]
    np.testing.assert_allclose(pe[1:], 0.5 * sincos_positions(3, 24), atol=1e-7)
    assert not pe[0].any()
    assert np.asarray(init_model(cfg, 0).encoder.model.pos_embed[...]).std() < 0.05
    with pytest.raises(ConfigError, match="init.pos"):
        init_model(cfg, 0, pos_init="learned")


def test_split_loss_trains_pose_on_clips_the_dense_heads_skip(targets):
    """train.dense_batch_size: Any4D.cameras gives the heads' poses and scale without the DPT heads; pose_terms
    vanishes on the truth and equals geometry_loss's rot term; a pose error on a pose-only clip reaches the split
    loss, counted once per clip; model_loss runs both ways on a real model."""
    from vggrpo_jax.geometry_model.job import model_loss
    from vggrpo_jax.geometry_model.losses import LossWeights, pose_terms, split_geometry_loss
    from vggrpo_jax.lgm.host_init import random_any4d
    from vggrpo_jax.models.any4d import Any4DConfig

    cfg = Any4DConfig(encoder_dim=24, encoder_depth=1, encoder_heads=2, pos_grid=2, trunk_dim=16, trunk_depth=2,
                      trunk_heads=2, tap_layers=(0, 1), dpt_feature_dim=8, dpt_layer_dims=(4, 8, 8, 8),
                      pose_head_dim=8, scale_hidden_dim=8)
    model = random_any4d(cfg, 1)
    full = model(targets.images)
    emb = model.embed(targets.images)
    tokens, _ = model.run_blocks(emb.tokens, 0, 2, 3)
    q, t, s = model.cameras(tokens, 3, emb.grid)
    np.testing.assert_allclose(np.asarray(q), np.asarray(full.cam_quats), atol=1e-6)
    np.testing.assert_allclose(np.asarray(t), np.asarray(full.cam_trans), atol=1e-6)
    np.testing.assert_allclose(np.asarray(s), np.asarray(full.metric_scale), rtol=1e-6)

    perfect = perfect_output(targets)
    truth = (perfect.cam_quats, perfect.cam_trans, perfect.metric_scale)
    rot, trans = pose_terms(*truth, targets)
    assert float(rot) < 1e-5 and float(trans) < 1e-5
    _, terms = geometry_loss(perfect_output(targets, rot_err=[0.0, np.deg2rad(5.0), 0.0]), targets)
    bad = perfect_output(targets, rot_err=[0.0, np.deg2rad(5.0), 0.0])
    np.testing.assert_allclose(float(pose_terms(bad.cam_quats, bad.cam_trans, bad.metric_scale, targets)[0]),
                               float(terms["rot"]), rtol=1e-5)
    head = jax.tree.map(lambda x: x[:1], perfect)
    w = LossWeights()
    ok, _ = split_geometry_loss(head, tuple(x[1:] for x in truth), targets, w)
    assert float(ok) < 2e-3
    off, off_terms = split_geometry_loss(head, (bad.cam_quats[1:], bad.cam_trans[1:], bad.metric_scale[1:]),
                                         targets, w)
    # two of the three clips carry the error: two thirds of the all-clip rot term
    np.testing.assert_allclose(float(off_terms["rot"]), 2 / 3 * float(terms["rot"]), rtol=1e-4)
    with pytest.raises(ValueError, match="split"):
        split_geometry_loss(head, tuple(x[2:] for x in truth), targets, w)

    both = [model_loss(model, targets.images, targets, w, k) for k in (3, 1)]
    assert all(np.isfinite(float(loss)) for loss, _ in both)
    assert float(both[0][1]["rot"]) == pytest.approx(float(both[1][1]["rot"]), rel=1e-5)  # one formula for rot
