"""r_geo on toyworld ground truth: ~0 error (bounded by the z-buffer's sub-pixel discretisation), corruption is found,
dynamic objects are filtered by scene flow, scale invariance, gradients and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.data.toyworld import ToyworldConfig, clip_geometry, render_clip
from vggrpo_jax.geometry import SceneGeometry, pose_from_rotation_translation, so3_exp
from vggrpo_jax.rewards import reprojection_consistency
from vggrpo_jax.rewards.reprojection import _masked_quantile

# Ground truth is not exactly 0: a z-buffer pixel takes the depth of whichever point lands anywhere inside it, not at
# its centre, so the error is ~|∇D|·(sub-pixel offset), largest on grazing floor. On 64x64 toyworld clips it is
# 1.3-3% of the median depth per view (it halves at 128x128). Bound used below, relative to the median depth:
GT_BOUND = 0.04
N, H, W = 9, 64, 64

rc = jax.jit(reprojection_consistency, static_argnames=("top_k", "leave_one_out", "normalize", "stride",
                                                         "flow_convention", "use_scene_flow", "zbuffer"))


@pytest.fixture(scope="module")
def static_geom():
    clip = render_clip(3, config=ToyworldConfig(num_frames=N, height=H, width=W, dynamic_prob=0.0))  # an orbit
    assert not clip["is_dynamic"]
    return clip_geometry(clip, "none")


@pytest.fixture(scope="module")
def dynamic_clip():
    clip = render_clip(2, config=ToyworldConfig(num_frames=N, height=H, width=W, dynamic_prob=1.0,
                                                speed_range=(0.12, 0.18)))
    assert clip["dynamic_mask"].mean() > 0.02  # moving objects cover a real part of the frames
    return clip


def test_static_ground_truth_scores_near_zero(static_geom):
    out = rc(static_geom)
    assert out.per_view_error.shape == (N,)
    assert float(jnp.max(out.per_view_error)) < GT_BOUND
    assert -GT_BOUND < float(out.reward) <= 0
    assert np.all(np.asarray(out.num_valid) > 0.3 * H * W)
    # The reward is minus the mean of the 3 largest per-view errors.
    np.testing.assert_allclose(out.reward, -np.sort(np.asarray(out.per_view_error))[-3:].mean(), rtol=1e-6)


def test_corrupted_depth_makes_that_view_worst(static_geom):
    base = rc(static_geom)
    bad = static_geom.replace(depth=static_geom.depth.at[5].multiply(1.25))
    out = rc(bad)
    assert int(jnp.argmax(out.per_view_error)) == 5
    assert float(out.per_view_error[5]) > 4 * GT_BOUND
    assert float(out.reward) < float(base.reward) - 0.03


def test_corrupted_pose_makes_that_view_worst(static_geom):
    base = rc(static_geom)
    delta = pose_from_rotation_translation(so3_exp(jnp.array([0.0, 0.08, 0.03])), jnp.array([0.2, 0.0, 0.0]))
    bad = static_geom.replace(c2w=static_geom.c2w.at[2].set(static_geom.c2w[2] @ delta))
    out = rc(bad)
    assert int(jnp.argmax(out.per_view_error)) == 2
    assert float(out.per_view_error[2]) > 2 * float(base.per_view_error[2])
    assert float(out.reward) < float(base.reward) - 0.005


def test_leave_one_out_stops_a_view_agreeing_with_itself(static_geom):
    # View 4 pulled 30% towards its camera, depth and points together: self-consistent, inconsistent with the rest.
    c = static_geom.c2w[4, :3, 3]
    bad = static_geom.replace(depth=static_geom.depth.at[4].multiply(0.7),
                              points=static_geom.points.at[4].set(c + 0.7 * (static_geom.points[4] - c)))
    loo = rc(bad)
    all_views = rc(bad, leave_one_out=False)
    assert int(jnp.argmax(loo.per_view_error)) == 4 and float(loo.per_view_error[4]) > 4 * GT_BOUND
    assert float(all_views.per_view_error[4]) < 1e-3  # its own (nearer) points win every one of its pixels
    with pytest.raises(ValueError, match="at least 2 views"):
        reprojection_consistency(jax.tree_util.tree_map(lambda x: x[:1], static_geom))


@pytest.mark.parametrize("scale", [0.05, 3.0, 40.0])
def test_scale_invariant_by_default_absolute_on_request(static_geom, scale):
    scaled = static_geom.replace(depth=static_geom.depth * scale, points=static_geom.points * scale,
                                 c2w=static_geom.c2w.at[:, :3, 3].multiply(scale))
    np.testing.assert_allclose(rc(scaled).reward, rc(static_geom).reward, rtol=1e-4)
    np.testing.assert_allclose(rc(scaled, normalize=False).reward,
                               scale * rc(static_geom, normalize=False).reward, rtol=1e-4)


def test_dynamic_scene_with_scene_flow(dynamic_clip):
    g = clip_geometry(dynamic_clip, "any4d")
    with_flow = rc(g)
    no_flow = rc(g, use_scene_flow=False)
    per_view = rc(clip_geometry(dynamic_clip, "per_view"), flow_convention="per_view")
    assert float(jnp.max(with_flow.per_view_error)) < GT_BOUND
    assert float(jnp.max(per_view.per_view_error)) < GT_BOUND
    assert float(no_flow.reward) < 2 * float(with_flow.reward)  # at least twice the error without the filter
    assert float(no_flow.reward) < -1.5 * GT_BOUND


def test_stride_keeps_ground_truth_low_and_finds_corruption(static_geom):
    out = rc(static_geom, stride=2)
    assert float(jnp.max(out.per_view_error)) < 1.5 * GT_BOUND  # twice coarser pixels: larger discretisation
    bad = rc(static_geom.replace(depth=static_geom.depth.at[1].multiply(1.25)), stride=2)
    assert int(jnp.argmax(bad.per_view_error)) == 1


def test_confidence_filter_removes_low_confidence_pixels(static_geom):
    corrupt = np.zeros((N, H, W), bool)
    corrupt[6, :, : W // 3] = True
    bad = static_geom.replace(depth=jnp.where(corrupt, static_geom.depth * 1.5, static_geom.depth))
    conf = jnp.where(corrupt, 1.0, 5.0)
    unfiltered = rc(bad.replace(conf=jnp.full((N, H, W), 5.0)))
    filtered = rc(bad.replace(conf=conf))  # default: drop the lowest 10% of confidences (the 3.7% corrupted)
    assert int(jnp.argmax(unfiltered.per_view_error)) == 6 and float(unfiltered.per_view_error[6]) > 2 * GT_BOUND
    assert float(filtered.per_view_error[6]) < GT_BOUND


def test_gradients_are_finite(static_geom):
    def loss(depth, points, c2w, K):
        g = SceneGeometry(c2w=c2w, intrinsics=K, depth=depth, points=points)
        return reprojection_consistency(g).reward

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(static_geom.depth, static_geom.points, static_geom.c2w,
                                                        static_geom.intrinsics)
    for g in grads:
        assert np.all(np.isfinite(g))
    assert float(jnp.abs(grads[0]).sum()) > 0 and float(jnp.abs(grads[1]).sum()) > 0


def test_nan_camera_and_batch_dims(static_geom):
    bad = static_geom.replace(c2w=static_geom.c2w.at[3, 0, 0].set(jnp.nan))
    batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), static_geom, bad)
    out = rc(batch)
    assert out.reward.shape == (2,) and out.per_view_error.shape == (2, N)
    np.testing.assert_allclose(out.per_view_error[0], rc(static_geom).per_view_error, rtol=1e-5)
    assert np.isinf(float(out.per_view_error[1, 3])) and float(out.reward[1]) == -np.inf
    others = np.delete(np.asarray(out.per_view_error[1]), 3)
    assert np.all(np.isfinite(others))


def test_bad_inputs(static_geom):
    with pytest.raises(ValueError, match="points"):
        reprojection_consistency(static_geom.replace(points=static_geom.points[:, :-1]))
    with pytest.raises(TypeError, match="SceneGeometry"):
        reprojection_consistency({"depth": static_geom.depth})
    with pytest.raises(ValueError, match="flow_convention"):
        reprojection_consistency(static_geom, flow_convention="forward")
    with pytest.raises(ValueError, match="top_k"):
        reprojection_consistency(static_geom, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        reprojection_consistency(static_geom, top_k=N + 1)


@pytest.mark.parametrize("scene", ["static_conf", "dynamic_any4d", "corrupt_stride2"])
def test_sort_zbuffer_gives_the_scatter_reward(static_geom, dynamic_clip, scene):
    """The scatter-free z-buffer renders the same depth maps bit for bit, so every per-view error and the reward
    agree (the Any4D case z-buffers the moving points for the dynamic masks too)."""
    kw = {}
    if scene == "static_conf":
        g = static_geom.replace(conf=jnp.asarray(np.random.default_rng(0).uniform(1, 5, (N, H, W)), jnp.float32))
    elif scene == "dynamic_any4d":
        g = clip_geometry(dynamic_clip, "any4d")
    else:
        g, kw = static_geom.replace(depth=static_geom.depth.at[5].multiply(1.25)), {"stride": 2}
    scatter, sort = rc(g, zbuffer="scatter", **kw), rc(g, zbuffer="sort", **kw)
    np.testing.assert_array_equal(np.asarray(sort.num_valid), np.asarray(scatter.num_valid))
    np.testing.assert_allclose(np.asarray(sort.per_view_error), np.asarray(scatter.per_view_error), rtol=1e-6)
    np.testing.assert_allclose(float(sort.reward), float(scatter.reward), rtol=1e-6)
    assert float(scatter.reward) < 0
    with pytest.raises(ValueError, match="zbuffer"):
        reprojection_consistency(g, zbuffer="atomic")


def test_masked_quantile_matches_nanquantile():
    """The sort-free selection behind the median normalisation and the confidence quantile."""
    rng = np.random.default_rng(0)
    quantile = jax.jit(_masked_quantile, static_argnums=2)
    for trial in range(12):
        n = int(rng.integers(1, 300))
        x = (rng.normal(size=n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x)  # ties
        mask = rng.random(n) < (0.0 if trial == 5 else 0.7)
        for q in (0.5, 0.1, 0.0, 1.0):
            ref = float(jnp.nanquantile(jnp.where(mask, x, jnp.nan), q))
            got = float(quantile(jnp.asarray(x), jnp.asarray(mask), q))
            if not mask.any():
                assert np.isnan(got) and np.isnan(ref)
            else:
                assert abs(got - ref) <= 1e-6 * np.abs(x).max(), (trial, q, got, ref)
    g = jax.grad(lambda v: _masked_quantile(v, jnp.ones(5, bool), 0.5))(jnp.array([3.0, 1.0, 2.0, 5.0, 4.0]))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 0, 0, 0, 0])  # the median element gets the gradient
