"""Z-buffer: nearest point wins, behind-camera / outside points dropped, vmap/jit/stride, gradients; the sort path
equals the scatter-min path exactly (depth, validity, gradients) and an independent NumPy minimum.at."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax import geometry as G
from vggrpo_jax.geometry import make_intrinsics, pose_from_rotation_translation, so3_exp, unproject_depth

# Jitted once per shape (eager op-by-op dispatch is what makes small tests slow); errors still raise at trace time.
render_depth = jax.jit(G.render_depth, static_argnames=("height", "width", "stride", "method", "transposed"))

H, W = 8, 10
K = make_intrinsics(10.0, 10.0, 5.0, 4.0)
EYE = jnp.eye(4)


def _pixel_point(u, v, z):
    """World point (identity camera) landing at the centre of pixel (u, v) at depth z."""
    return jnp.array([(u + 0.5 - 5.0) / 10.0 * z, (v + 0.5 - 4.0) / 10.0 * z, z])


def test_nearer_point_wins_regardless_of_order():
    for order in ([2.0, 1.0], [1.0, 2.0]):
        pts = jnp.stack([_pixel_point(3, 2, z) for z in order])
        depth, valid = render_depth(pts, EYE, K, H, W)
        assert bool(valid[2, 3]) and float(depth[2, 3]) == pytest.approx(1.0)
        assert int(valid.sum()) == 1  # empty pixels are invalid
        assert float(depth[0, 0]) == 0.0


def test_behind_camera_and_outside_points_are_ignored():
    behind = -_pixel_point(3, 2, 1.0)  # z = -1: would project onto the image if not rejected
    outside = _pixel_point(12, 2, 1.0)
    nan_pt = jnp.array([jnp.nan, 0.0, 1.0])
    ok = _pixel_point(1, 1, 3.0)
    depth, valid = render_depth(jnp.stack([behind, outside, nan_pt, ok]), EYE, K, H, W)
    assert int(valid.sum()) == 1 and bool(valid[1, 1]) and float(depth[1, 1]) == pytest.approx(3.0)
    # A point behind the camera must not occlude a visible one.
    d2, v2 = render_depth(jnp.stack([_pixel_point(1, 1, -0.5) * jnp.array([1, 1, 1.0]), ok]), EYE, K, H, W)
    assert float(d2[1, 1]) == pytest.approx(3.0)


def test_renders_a_depth_map_exactly_and_vmaps_over_views():
    rng = np.random.default_rng(0)
    depth = jnp.asarray(rng.uniform(2, 4, (H, W)), jnp.float32)
    c2ws = jnp.stack([pose_from_rotation_translation(so3_exp(jnp.asarray(rng.normal(size=3) * 0.3, jnp.float32)),
                                                     jnp.asarray(rng.normal(size=3), jnp.float32)) for _ in range(3)])
    pts = jax.vmap(lambda c: unproject_depth(depth, c, K))(c2ws)  # each view's own points
    render = jax.jit(jax.vmap(lambda p, c: G.render_depth(p.reshape(-1, 3), c, K, H, W)))
    d, v = render(pts, c2ws)
    assert bool(v.all())
    np.testing.assert_allclose(d, jnp.broadcast_to(depth, (3, H, W)), rtol=1e-5)


def test_stride_and_point_mask():
    depth = jnp.full((H, W), 2.0)
    pts = unproject_depth(depth, EYE, K)
    d, v = render_depth(pts[::2, ::2].reshape(-1, 3), EYE, K, H, W, stride=2)
    assert d.shape == (H // 2, W // 2) and bool(v.all())
    np.testing.assert_allclose(d, 2.0, rtol=1e-6)
    mask = jnp.zeros((H * W,), bool).at[0].set(True)
    d, v = render_depth(pts.reshape(-1, 3), EYE, K, H, W, point_mask=mask)
    assert int(v.sum()) == 1 and bool(v[0, 0])
    with pytest.raises(ValueError, match="stride"):
        render_depth(pts.reshape(-1, 3), EYE, K, H, W, stride=0)
    with pytest.raises(ValueError, match="points"):
        render_depth(pts, EYE, K, H, W)


def test_gradient_flows_to_the_winning_point_only():
    pts = jnp.stack([_pixel_point(3, 2, 2.0), _pixel_point(3, 2, 1.0), _pixel_point(0, 0, 1.5)])
    g = jax.jit(jax.grad(lambda p: G.render_depth(p, EYE, K, H, W)[0].sum()))(pts)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0], 0.0)
    assert float(g[1, 2]) == pytest.approx(1.0, abs=1e-5)
    gc = jax.jit(jax.grad(lambda c: G.render_depth(pts, c, K, H, W)[0].sum()))(EYE)
    assert np.all(np.isfinite(gc))


def _random_cloud(seed, n=400):
    """Points in front of and behind the camera, some outside the image, some non-finite, with a mask."""
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1.5, 1.5, n), rng.uniform(-1.0, 4.0, n)], -1)
    pts[rng.random(n) < 0.03] = np.nan
    pts[:40] = pts[40:80] * [1, 1, 1.3]  # points sharing pixels with others, farther
    return jnp.asarray(pts, jnp.float32), jnp.asarray(rng.random(n) < 0.9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sort_zbuffer_equals_scatter_exactly(seed):
    pts, mask = _random_cloud(seed)
    c2w = pose_from_rotation_translation(so3_exp(jnp.array([0.1, -0.2, 0.05])), jnp.array([0.1, 0.0, -0.3]))
    for stride in (1, 2):
        ds, vs = render_depth(pts, c2w, K, H, W, stride, point_mask=mask)
        dt, vt = render_depth(pts, c2w, K, H, W, stride, point_mask=mask, method="sort")
        assert int(vs.sum()) > 10
        np.testing.assert_array_equal(np.asarray(dt), np.asarray(ds))
        np.testing.assert_array_equal(np.asarray(vt), np.asarray(vs))
    # (3, P) input is the same cloud.
    dT, _ = render_depth(pts.T, c2w, K, H, W, point_mask=mask, transposed=True, method="sort")
    np.testing.assert_array_equal(np.asarray(dT), np.asarray(render_depth(pts, c2w, K, H, W, point_mask=mask)[0]))


def test_sort_zbuffer_matches_a_numpy_minimum_at():
    """Independent check of the pixel assignment: float64 NumPy projection + np.minimum.at."""
    pts, mask = _random_cloud(5, n=2000)
    p, m = np.asarray(pts, np.float64), np.asarray(mask)
    z = p[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        u, v = 10.0 * p[:, 0] / z + 5.0, 10.0 * p[:, 1] / z + 4.0
        ok = m & (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    buf = np.full(H * W, np.inf)
    np.minimum.at(buf, (np.floor(v[ok]) * W + np.floor(u[ok])).astype(int), z[ok])
    d, valid = render_depth(pts, EYE, K, H, W, point_mask=mask, method="sort")
    np.testing.assert_array_equal(np.asarray(valid).reshape(-1), np.isfinite(buf))
    np.testing.assert_allclose(np.asarray(d).reshape(-1), np.where(np.isfinite(buf), buf, 0.0), rtol=1e-6)


def test_sort_zbuffer_gradient_equals_scatter():
    pts, mask = _random_cloud(3)
    c2w = pose_from_rotation_translation(so3_exp(jnp.array([0.0, 0.1, 0.0])), jnp.array([0.0, 0.1, -0.2]))
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(H, W)), jnp.float32)

    def loss(p, c, method):
        return jnp.sum(weights * G.render_depth(p, c, K, H, W, point_mask=mask, method=method)[0])

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    (gp_s, gc_s), (gp_t, gc_t) = grad(pts, c2w, "scatter"), grad(pts, c2w, "sort")
    assert float(jnp.abs(jnp.nan_to_num(gp_s)).sum()) > 0
    np.testing.assert_allclose(np.nan_to_num(gp_t), np.nan_to_num(gp_s), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gc_t, gc_s, rtol=1e-5, atol=1e-5)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="zbuffer must be one of"):
        render_depth(jnp.zeros((4, 3)), EYE, K, H, W, method="atomic")
