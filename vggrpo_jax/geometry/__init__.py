"""Pure array geometry: SO(3)/SE(3), quaternions (xyzw), pinhole cameras, z-buffer rendering, SceneGeometry.

Conventions: camera-to-world 4x4 poses, OpenCV camera axes (x right, y down, z forward), z-depth, pixel (u, v)
centred at (u + 0.5, v + 0.5). See ``camera.py`` for the details.
"""
from vggrpo_jax.geometry.camera import (
    camera_centers,
    camera_to_world,
    intrinsics_from_rays,
    invert_pose,
    make_intrinsics,
    pixel_grid,
    pixel_rays,
    pose_from_rotation_translation,
    project,
    ray_depth_to_z,
    scale_intrinsics,
    unproject_depth,
    world_to_camera,
)
from vggrpo_jax.geometry.rotation import (
    quaternion_log,
    quaternion_to_rotation,
    rotation_to_quaternion,
    safe_norm,
    skew,
    so3_exp,
    so3_log,
)
from vggrpo_jax.geometry.scene import SceneGeometry
from vggrpo_jax.geometry.zbuffer import render_depth

__all__ = [
    "SceneGeometry",
    "camera_centers",
    "camera_to_world",
    "intrinsics_from_rays",
    "invert_pose",
    "make_intrinsics",
    "pixel_grid",
    "pixel_rays",
    "pose_from_rotation_translation",
    "project",
    "quaternion_log",
    "quaternion_to_rotation",
    "ray_depth_to_z",
    "render_depth",
    "rotation_to_quaternion",
    "safe_norm",
    "scale_intrinsics",
    "skew",
    "so3_exp",
    "so3_log",
    "unproject_depth",
    "world_to_camera",
]
