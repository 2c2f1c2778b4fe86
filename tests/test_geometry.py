"""Geometry library: rotations against scipy (independent reference), cameras, SceneGeometry validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vggrpo_jax import geometry as G
from vggrpo_jax.geometry import SceneGeometry, make_intrinsics, pixel_rays

# The functions under test, jitted: one compile per function and shape instead of one per eager op, which is what
# dominates these tests' run time on a small CPU. Shape errors are still raised at trace time.
intrinsics_from_rays = jax.jit(G.intrinsics_from_rays)
invert_pose = jax.jit(G.invert_pose)
pose_from_rotation_translation = jax.jit(G.pose_from_rotation_translation)
project = jax.jit(G.project)
quaternion_to_rotation = jax.jit(G.quaternion_to_rotation)
ray_depth_to_z = jax.jit(G.ray_depth_to_z)
rotation_to_quaternion = jax.jit(G.rotation_to_quaternion)
so3_exp = jax.jit(G.so3_exp)
so3_log = jax.jit(G.so3_log)
unproject_depth = jax.jit(G.unproject_depth)

TOL = 2e-6  # fp32 rotation round trips

# Jitted once per module: eager op-by-op dispatch of the Jacobians is the slow part of these tests.
_log = so3_log
_exp = so3_exp
_jac_log = jax.jit(jax.jacobian(G.so3_log))
_jac_exp = jax.jit(jax.jacobian(G.so3_exp))
_grad_q = jax.jit(jax.grad(lambda q: G.so3_log(G.quaternion_to_rotation(q)).sum()))


@pytest.fixture(scope="module")
def rots():
    return Rotation.random(512, random_state=0)


def test_quaternion_rotation_match_scipy(rots):
    q = jnp.asarray(rots.as_quat(), jnp.float32)  # scipy uses xyzw too
    np.testing.assert_allclose(quaternion_to_rotation(q), rots.as_matrix(), atol=TOL)
    qs = rots.as_quat() * np.sign(rots.as_quat()[:, 3:])  # canonical w >= 0
    np.testing.assert_allclose(rotation_to_quaternion(jnp.asarray(rots.as_matrix(), jnp.float32)), qs, atol=TOL)
    # Unnormalised quaternions are normalised.
    np.testing.assert_allclose(quaternion_to_rotation(3.0 * q), rots.as_matrix(), atol=TOL)


def test_so3_exp_log_match_scipy(rots):
    R = jnp.asarray(rots.as_matrix(), jnp.float32)
    np.testing.assert_allclose(so3_log(R), rots.as_rotvec(), atol=2e-6)
    np.testing.assert_allclose(so3_exp(jnp.asarray(rots.as_rotvec(), jnp.float32)), rots.as_matrix(), atol=TOL)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-4, 0.5, np.pi - 1e-3, np.pi - 1e-6, np.pi])
def test_so3_log_edge_angles_values_and_finite_gradients(angle):
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    rotvec = angle * axis
    R = jnp.asarray(Rotation.from_rotvec(rotvec).as_matrix(), jnp.float32)
    w = _log(R)
    assert abs(float(jnp.linalg.norm(w)) - angle) < 2e-6 * max(1.0, angle) + 1e-6
    # The log is only defined up to sign at pi; its exp must give R back in all cases.
    np.testing.assert_allclose(_exp(w), R, atol=2e-6)
    assert np.all(np.isfinite(_jac_log(R)))
    assert np.all(np.isfinite(_jac_exp(jnp.asarray(rotvec, jnp.float32))))
    assert np.all(np.isfinite(_grad_q(rotation_to_quaternion(R))))


def test_so3_log_gradient_matches_finite_difference():
    R0 = jnp.asarray(Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix(), jnp.float32)
    d = jnp.asarray(np.random.default_rng(0).normal(size=3), R0.dtype)
    f = jax.jit(lambda t: G.so3_log(G.so3_exp(t * d) @ R0))
    jvp = jax.jit(lambda t: jax.jvp(f, (t,), (1.0,))[1])(0.0)
    fd = (f(1e-3) - f(-1e-3)) / 2e-3
    np.testing.assert_allclose(jvp, fd, atol=1e-3)


def test_invert_pose_and_pose_builder(rots):
    R = jnp.asarray(rots.as_matrix()[:8], jnp.float32)
    t = jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32)
    T = pose_from_rotation_translation(R, t)
    assert T.shape == (8, 4, 4)
    np.testing.assert_allclose(T @ invert_pose(T), np.broadcast_to(np.eye(4), (8, 4, 4)), atol=1e-5)
    np.testing.assert_allclose(invert_pose(invert_pose(T)), T, atol=1e-5)
    np.testing.assert_allclose(invert_pose(T), np.linalg.inv(np.asarray(T, np.float64)), atol=1e-5)


def test_project_hand_computed():
    K = make_intrinsics(100.0, 80.0, 32.0, 24.0)
    c2w = jnp.eye(4).at[:3, 3].set(jnp.array([1.0, 0.0, -1.0]))  # camera at (1, 0, -1), looking along +z
    xy, z = project(jnp.array([1.1, 0.2, 1.0]), c2w, K)  # camera-frame (0.1, 0.2, 2)
    np.testing.assert_allclose(xy, [100 * 0.05 + 32, 80 * 0.1 + 24], atol=1e-5)
    np.testing.assert_allclose(z, 2.0, atol=1e-6)


def test_unproject_project_round_trip_on_pixel_centres(rots):
    H, W = 6, 9
    K = make_intrinsics(50.0, 55.0, 4.4, 3.1)
    c2w = pose_from_rotation_translation(jnp.asarray(rots.as_matrix()[0], jnp.float32), jnp.array([0.5, -1.0, 2.0]))
    depth = jnp.asarray(np.random.default_rng(2).uniform(1, 5, (H, W)), jnp.float32)
    pts = unproject_depth(depth, c2w, K)
    xy, z = project(pts, c2w, K)
    ys, xs = np.mgrid[:H, :W]
    np.testing.assert_allclose(xy[..., 0], xs + 0.5, atol=1e-3)  # pixel (u, v) centre at (u + .5, v + .5)
    np.testing.assert_allclose(xy[..., 1], ys + 0.5, atol=1e-3)
    np.testing.assert_allclose(z, depth, rtol=1e-5)


def test_ray_depth_to_z_and_intrinsics_from_rays():
    H, W = 12, 16
    K = make_intrinsics(20.0, 22.0, 7.5, 6.25)
    rays = pixel_rays(K, H, W)
    unit = rays / jnp.linalg.norm(rays, axis=-1, keepdims=True)
    z = jnp.asarray(np.random.default_rng(3).uniform(1, 3, (H, W)), jnp.float32)
    along = z * jnp.linalg.norm(rays, axis=-1)  # Euclidean distance of the point at z-depth z
    np.testing.assert_allclose(ray_depth_to_z(along, unit), z, rtol=1e-6)
    np.testing.assert_allclose(intrinsics_from_rays(unit), K, atol=1e-3)
    # Batched, and robust to a few backwards rays (excluded from the fit).
    batch = jnp.stack([unit, unit.at[0, 0].set(jnp.array([0.0, 0.0, -1.0]))])
    np.testing.assert_allclose(intrinsics_from_rays(batch), jnp.stack([K, K]), atol=1e-3)
    with pytest.raises(ValueError, match="rays"):
        intrinsics_from_rays(unit[..., :2])


def _geom(N=3, H=4, W=5, **kw):
    f = dict(
        c2w=jnp.broadcast_to(jnp.eye(4), (N, 4, 4)),
        intrinsics=jnp.broadcast_to(make_intrinsics(5.0, 5.0, 2.5, 2.0), (N, 3, 3)),
        depth=jnp.ones((N, H, W)),
        points=jnp.zeros((N, H, W, 3)),
    )
    f.update(kw)
    return SceneGeometry(**f)


def test_scene_geometry_pytree_and_validate():
    g = _geom(conf=jnp.ones((3, 4, 5)))
    assert g.validate() is g
    assert g.num_views == 3 and g.image_size == (4, 5)
    leaves = jax.tree_util.tree_leaves(g)
    assert len(leaves) == 5  # scene_flow None is not a leaf
    doubled = jax.jit(lambda x: jax.tree_util.tree_map(lambda a: 2 * a, x))(g)
    np.testing.assert_allclose(doubled.depth, 2.0)
    # vmap over a leading batch dim.
    gb = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), g)
    assert gb.validate().batch_shape == (2,)


@pytest.mark.parametrize(
    "field,value",
    [
        ("points", jnp.zeros((3, 4, 5, 2))),
        ("c2w", jnp.zeros((2, 4, 4))),
        ("intrinsics", jnp.zeros((3, 4, 4))),
        ("conf", jnp.zeros((3, 4, 6))),
        ("scene_flow", jnp.zeros((3, 4, 5))),
    ],
)
def test_scene_geometry_validate_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        _geom(**{field: value}).validate()


def test_shape_errors_are_python_errors():
    with pytest.raises(ValueError, match="q"):
        quaternion_to_rotation(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="R"):
        so3_log(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="c2w"):
        project(jnp.zeros((3,)), jnp.eye(3), jnp.eye(3))
