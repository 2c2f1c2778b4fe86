"""Toyworld: procedural 3D scenes with exact geometry, rendered in JAX by analytic ray casting.

A scene is a checkered ground square (z = 0, world z up) with a few coloured boxes (yawed) and spheres standing on
it; some objects translate at constant velocity. A camera follows one of four paths (orbit, dolly, pan, crane), smooth
or with per-frame jitter. Each clip comes with everything a geometry model predicts, exactly:

- ``video`` (F, H, W, 3) RGB in [0, 1]
- ``c2w`` (F, 4, 4) camera-to-world, OpenCV camera axes (x right, y down, z forward)
- ``intrinsics`` (F, 3, 3) pinhole K in pixels; pixel (u, v) is centred at (u + 0.5, v + 0.5)
- ``depth`` (F, H, W) z-depth (0 where the ray hits nothing: sky); ``valid`` (F, H, W) where it hits something
- ``points`` (F, H, W, 3) world coordinates of each pixel's surface point (0 on sky)
- ``scene_flow`` (F, H, W, 3) Any4D's convention: ``scene_flow[k]`` is on VIEW 0's pixel grid and moves view 0's
  points to their positions at time k (world frame; ``scene_flow[0] == 0``; 0 on static surfaces and sky)
- ``scene_flow_per_view`` (F, H, W, 3): on each view's own grid, the world displacement of that view's points from
  time k to time k + 1 (objects move at constant velocity, so it is the per-frame velocity; also for the last frame)
- ``dynamic_mask`` (F, H, W): pixels of each frame that show a moving object
- ``object_id`` (F, H, W) int: −2 sky, −1 ground, j >= 0 object j
- ``object_shape`` (n,) 0 box / 1 sphere, ``object_center`` (n, 3) at frame 0, ``object_vel`` (n, 3) per frame,
  ``object_half`` (n, 3) box half extents, ``object_sphere_r`` (n,), ``object_yaw`` (n,), ``object_moving`` (n,),
  ``object_color`` (n,) index into ``COLORS``
- ``caption`` naming the objects, which move, and the camera motion (never the jitter); ``camera_motion`` the path's
  name.

Everything is a deterministic function of the seed (``jax.random.key(seed)``). One jit per (frames, height, width,
config), where jitter, dynamic_prob, min_moving and speed_range do not count (they are traced). ``ToyworldSource`` is a
grain-style random-access data source (record i uses seed base_seed + i).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax.geometry.camera import make_intrinsics, pixel_rays, pose_from_rotation_translation
from vggrpo_jax.geometry.scene import SceneGeometry

CAMERA_MOTIONS = ("orbit", "dolly", "pan", "crane")
_MOTION_PHRASES = {
    "orbit": "The camera orbits around the scene",
    "dolly": "The camera dollies in towards the objects",
    "pan": "The camera pans across the scene",
    "crane": "The camera cranes up over the scene",
}
COLORS = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.92, 0.82, 0.15),
    "purple": (0.55, 0.2, 0.7),
    "orange": (0.95, 0.5, 0.1),
    "cyan": (0.1, 0.75, 0.8),
    "white": (0.92, 0.92, 0.9),
}
SHAPES = ("box", "sphere")
_COLOR_NAMES = tuple(COLORS)
_PALETTE = np.asarray([COLORS[c] for c in _COLOR_NAMES], np.float32)
_LIGHT = np.asarray([0.4, -0.3, 0.87], np.float32) / np.linalg.norm([0.4, -0.3, 0.87])
_TARGET_Z = 0.4  # cameras look at a point this high above the scene centre


@dataclasses.dataclass(frozen=True)
class ToyworldConfig:
    """Knobs of the scene and camera distributions (hashable: it is a static jit argument).

    Distances are world units; a scene spans about 5 units. ``jitter`` is the standard deviation of per-frame camera
    position and look-at noise as a fraction of the camera-target distance (0 = smooth path).
    """

    num_frames: int = 17
    height: int = 64
    width: int = 64
    num_objects: int = 3
    dynamic_prob: float = 0.5
    min_moving: int = 0  # at least this many objects move (those with the lowest motion draws), whatever dynamic_prob
    speed_range: tuple[float, float] = (0.04, 0.09)  # units per frame for moving objects
    camera_motions: tuple[str, ...] = CAMERA_MOTIONS
    jitter: float = 0.0
    fov_deg: float = 60.0  # horizontal field of view
    ground_half_extent: float = 6.0
    checker_size: float = 0.5
    # Multiplies every object's size (box half-extents 0.22–0.5, sphere radius 0.28–0.5 at 1); `ring_radius` is the
    # range of the objects' distances from the scene centre (spread wider with bigger objects so they rarely meet).
    object_scale: float = 1.0
    ring_radius: tuple[float, float] = (0.5, 1.8)
    # Colour rendered from supersample² rays per pixel (box filter), so far-away checkers blend to their mean instead
    # of aliasing into pixel noise; depth, points and ids stay those of the pixel-centre ray.
    supersample: int = 1
    # Scales the difference between the two checker colours about their mean (1 = the full light/dark pair).
    checker_contrast: float = 1.0

    def __post_init__(self):
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError(
                f"num_frames, height, width must be positive, got {self.num_frames}, {self.height}, {self.width}"
            )
        if not 1 <= self.num_objects <= len(COLORS):
            raise ValueError(f"num_objects must be in [1, {len(COLORS)}], got {self.num_objects}")
        bad = [m for m in self.camera_motions if m not in CAMERA_MOTIONS]
        if bad or not self.camera_motions:
            raise ValueError(
                f"camera_motions must be a non-empty subset of {CAMERA_MOTIONS}, got {self.camera_motions}"
            )
        if self.jitter < 0 or not 0 <= self.dynamic_prob <= 1:
            raise ValueError(f"jitter must be >= 0 and dynamic_prob in [0, 1], got {self.jitter}, {self.dynamic_prob}")
        if not 0 <= self.min_moving <= self.num_objects:
            raise ValueError(f"min_moving must be in [0, num_objects={self.num_objects}], got {self.min_moving}")
        if not 1.0 <= self.fov_deg <= 150.0:
            raise ValueError(f"fov_deg must be in [1, 150], got {self.fov_deg}")
        if not 0 < self.checker_contrast <= 1:
            raise ValueError(f"checker_contrast must be in (0, 1], got {self.checker_contrast}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be in [1, 8], got {self.supersample}")
        if not 0.25 <= self.object_scale <= 3.0:
            raise ValueError(f"object_scale must be in [0.25, 3], got {self.object_scale}")
        if not 0 <= self.ring_radius[0] <= self.ring_radius[1] <= self.ground_half_extent:
            raise ValueError(f"ring_radius must be (lo, hi) with 0 <= lo <= hi <= ground_half_extent, got "
                             f"{self.ring_radius}")
        if not (self.checker_size > 0 and self.ground_half_extent > 0):
            raise ValueError(
                f"checker_size and ground_half_extent must be positive, got {self.checker_size}, "
                f"{self.ground_half_extent}"
            )


# ----------------------------------------------------------------------------------------------------------------
# Scene and camera sampling


# Config fields passed to the jitted renderer as traced values, so changing them does not recompile.
_TRACED_FIELDS = ("jitter", "dynamic_prob", "min_moving", "speed_range")


def _split_config(cfg: ToyworldConfig) -> tuple[ToyworldConfig, dict[str, jax.Array]]:
    static = dataclasses.replace(cfg, **{f: getattr(ToyworldConfig, f) for f in _TRACED_FIELDS})
    traced = dict(jitter=jnp.float32(cfg.jitter), dynamic_prob=jnp.float32(cfg.dynamic_prob),
                  min_moving=jnp.int32(cfg.min_moving), speed_range=jnp.asarray(cfg.speed_range, jnp.float32))
    return static, traced


def _sample_scene(key: jax.Array, cfg: ToyworldConfig, traced: dict[str, jax.Array]) -> dict[str, jax.Array]:
    n = cfg.num_objects
    # One draw for everything: each threefry call is a large XLA computation, and compile time grows with their count.
    u = iter(jnp.split(jax.random.uniform(key, (10 + 11 * n,)), np.cumsum([n, 8, 1, n, n, 3 * n, n, n, n, n, n])))
    uni = lambda x, lo, hi: lo + (hi - lo) * x
    shape = (next(u) < 0.5).astype(jnp.int32)  # 0 box, 1 sphere
    color = jnp.argsort(next(u))[:n]  # a random permutation of the palette: distinct colours
    # Objects on a ring of evenly spread angles so they rarely intersect.
    ang = uni(next(u)[0], 0.0, 2 * jnp.pi) + 2 * jnp.pi * jnp.arange(n) / n + uni(next(u), -0.3, 0.3)
    rad = uni(next(u), cfg.ring_radius[0], cfg.ring_radius[1]) * (n > 1)
    half = uni(next(u).reshape(n, 3), 0.22, 0.5) * cfg.object_scale
    sphere_r = uni(next(u), 0.28, 0.5) * cfg.object_scale
    height = jnp.where(shape == 1, sphere_r, half[:, 2])
    center = jnp.stack([rad * jnp.cos(ang), rad * jnp.sin(ang), height], -1)
    yaw = uni(next(u), 0.0, jnp.pi)
    # The objects with the lowest draws move: those below dynamic_prob, and at least min_moving of them (with
    # min_moving = 0 this is exactly `draw < dynamic_prob`).
    draw = next(u)
    rank = jnp.argsort(jnp.argsort(draw))
    moving = rank < jnp.maximum(jnp.sum(draw < traced["dynamic_prob"]), traced["min_moving"])
    vdir = uni(next(u), 0.0, 2 * jnp.pi)
    speed = uni(next(u), traced["speed_range"][0], traced["speed_range"][1])
    vel = jnp.stack([jnp.cos(vdir), jnp.sin(vdir), jnp.zeros_like(vdir)], -1) * (speed * moving)[:, None]
    motion = jnp.minimum(jnp.floor(next(u)[0] * len(cfg.camera_motions)).astype(jnp.int32), len(cfg.camera_motions) - 1)
    return dict(shape=shape, color=color, center=center, half=half, sphere_r=sphere_r, yaw=yaw, moving=moving,
                vel=vel, motion=motion)


def look_at(eye: jax.Array, target: jax.Array, up=(0.0, 0.0, 1.0)) -> jax.Array:
    """Camera-to-world (..., 4, 4) with OpenCV axes looking from ``eye`` (..., 3) at ``target`` (..., 3), world z up."""
    fwd = target - eye
    fwd = fwd / jnp.linalg.norm(fwd, axis=-1, keepdims=True)
    right = jnp.cross(fwd, jnp.asarray(up, fwd.dtype))
    right = right / jnp.linalg.norm(right, axis=-1, keepdims=True)
    down = jnp.cross(fwd, right)
    R = jnp.stack([right, down, fwd], -1)  # columns = camera axes in world coordinates
    return pose_from_rotation_translation(R, eye)


def camera_path(key: jax.Array, motion: jax.Array | int, num_frames: int, jitter: jax.Array | float,
                motions: Sequence[str] = CAMERA_MOTIONS) -> jax.Array:
    """c2w (F, 4, 4) for path ``motions[motion]`` with random extent from ``key``; jittable in motion and jitter.

    Smooth paths move at constant speed in their own parameter (orbit: constant angular velocity around the scene;
    dolly: constant velocity towards it; pan: constant yaw rate in place; crane: constant vertical velocity).
    ``jitter`` adds i.i.d. Gaussian noise of std ``jitter`` × (camera–target distance) to each frame's eye and target.
    """
    # One uniform draw; Gaussian jitter by the inverse normal CDF (fewer threefry calls compile much faster).
    u = jax.random.uniform(key, (5 + 6 * num_frames,), minval=1e-7, maxval=1 - 1e-7)
    s = jnp.linspace(0.0, 1.0, num_frames) if num_frames > 1 else jnp.zeros((1,))
    target = jnp.array([0.0, 0.0, _TARGET_Z])
    th0 = 2 * jnp.pi * u[0]
    dist = 4.0 + 1.5 * u[1]
    h = 2.0 + u[2]
    sign = jnp.where(u[3] < 0.5, 1.0, -1.0)
    sweep = sign * (0.5 + 0.5 * u[4])
    noise = jax.scipy.special.ndtri(u[5:]).reshape(2, num_frames, 3)
    ring = lambda th, r, z: jnp.stack([r * jnp.cos(th), r * jnp.sin(th), z], -1)
    tgt = jnp.broadcast_to(target, (num_frames, 3))

    orbit = (ring(th0 + sweep * s, jnp.full_like(s, dist), jnp.full_like(s, h)), tgt)
    dolly = (ring(jnp.full_like(s, th0), dist - 1.6 * s, h - 0.4 * s), tgt)
    # Pan: the eye stays, the view direction turns at a constant rate about the vertical through the eye.
    eye_p = ring(th0, dist, h)
    yaw = jnp.arctan2(target[1] - eye_p[1], target[0] - eye_p[0]) + 0.45 * sweep * (s - 0.5)
    horiz = jnp.hypot(target[0] - eye_p[0], target[1] - eye_p[1])
    pan_target = jnp.stack(
        [eye_p[0] + horiz * jnp.cos(yaw), eye_p[1] + horiz * jnp.sin(yaw), jnp.full_like(s, target[2])], -1
    )
    pan = (jnp.broadcast_to(eye_p, (num_frames, 3)), pan_target)
    crane = (ring(jnp.full_like(s, th0), jnp.full_like(s, dist), 1.0 + 2.0 * s), tgt)

    paths = {"orbit": orbit, "dolly": dolly, "pan": pan, "crane": crane}
    eyes = jnp.stack([paths[m][0] for m in motions])
    tgts = jnp.stack([paths[m][1] for m in motions])
    eye, tg = eyes[motion], tgts[motion]
    d = jnp.linalg.norm(tg - eye, axis=-1, keepdims=True)
    eye = eye + jitter * d * noise[0]
    tg = tg + jitter * d * noise[1]
    return look_at(eye, tg)


def toyworld_intrinsics(height: int, width: int, fov_deg: float) -> jax.Array:
    f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
    return make_intrinsics(f, f, width / 2, height / 2)


# ----------------------------------------------------------------------------------------------------------------
# Ray casting


def _hit_spheres(o, d, centers, radii):
    """o (3,), d (R, 3) -> t (R, n) (inf on miss), normals (R, n, 3)."""
    oc = o[None, None] - centers[None]  # (1, n, 3)
    a = jnp.sum(d * d, -1)[:, None]
    b = 2 * jnp.sum(d[:, None] * oc, -1)
    c = jnp.sum(oc * oc, -1) - radii[None] ** 2
    disc = b * b - 4 * a * c
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / (2 * a)
    t = jnp.where((disc > 0) & (t > 1e-4), t, jnp.inf)
    p = o[None, None] + t[..., None] * d[:, None]
    nrm = (p - centers[None]) / radii[None, :, None]
    return t, nrm


def _hit_boxes(o, d, centers, half, yaw):
    """Boxes rotated by ``yaw`` about z. o (3,), d (R, 3) -> t (R, n), normals (R, n, 3)."""
    cy, sy = jnp.cos(yaw), jnp.sin(yaw)
    # World -> box frame: rotate by −yaw about z.
    rot = lambda v: jnp.stack(jnp.broadcast_arrays(cy * v[..., 0] + sy * v[..., 1], -sy * v[..., 0] + cy * v[..., 1],
                                                   v[..., 2]), -1)
    ol = rot(o[None] - centers)[None]  # (1, n, 3)
    dl = rot(d[:, None])  # (R, n, 3)
    dl_safe = jnp.where(jnp.abs(dl) < 1e-9, 1e-9, dl)
    t1 = (-half[None] - ol) / dl_safe
    t2 = (half[None] - ol) / dl_safe
    tnear, tfar = jnp.minimum(t1, t2), jnp.maximum(t1, t2)
    t_in, t_out = jnp.max(tnear, -1), jnp.min(tfar, -1)
    t = jnp.where((t_out >= t_in) & (t_in > 1e-4), t_in, jnp.inf)
    axis = jnp.argmax(tnear, -1)
    sgn = -jnp.sign(jnp.take_along_axis(dl, axis[..., None], -1))[..., 0]
    nl = jax.nn.one_hot(axis, 3) * sgn[..., None]
    # Box frame -> world: rotate by +yaw.
    nrm = jnp.stack([cy * nl[..., 0] - sy * nl[..., 1], sy * nl[..., 0] + cy * nl[..., 1], nl[..., 2]], -1)
    return t, nrm


def _render_frame(scene, cfg: ToyworldConfig, c2w, K, frame, height, width):
    rays_cam = pixel_rays(K, height, width).reshape(-1, 3)  # z = 1, so the ray parameter t is the z-depth
    d = rays_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    centers = scene["center"] + scene["vel"] * frame
    t_s, n_s = _hit_spheres(o, d, centers, scene["sphere_r"])
    t_b, n_b = _hit_boxes(o, d, centers, scene["half"], scene["yaw"])
    is_sphere = scene["shape"] == 1
    t_obj = jnp.where(is_sphere[None], t_s, t_b)
    n_obj = jnp.where(is_sphere[None, :, None], n_s, n_b)
    # Ground square z = 0.
    dz = jnp.where(jnp.abs(d[:, 2]) < 1e-9, -1e-9, d[:, 2])
    t_g = -o[2] / dz
    pg = o[None] + t_g[:, None] * d
    on_ground = (t_g > 1e-4) & (jnp.max(jnp.abs(pg[:, :2]), -1) <= cfg.ground_half_extent)
    t_g = jnp.where(on_ground, t_g, jnp.inf)

    t_all = jnp.concatenate([t_g[:, None], t_obj], -1)  # (R, 1 + n)
    idx = jnp.argmin(t_all, -1)
    t = jnp.min(t_all, -1)
    hit = jnp.isfinite(t)
    obj = jnp.where(hit, idx - 1, -2)
    p = o[None] + jnp.where(hit, t, 0.0)[:, None] * d

    light = jnp.asarray(_LIGHT)
    checker = (jnp.floor(p[:, 0] / cfg.checker_size) + jnp.floor(p[:, 1] / cfg.checker_size)) % 2
    light_sq, dark_sq = jnp.array([0.78, 0.76, 0.7]), jnp.array([0.35, 0.34, 0.32])
    mid, half = (light_sq + dark_sq) / 2, cfg.checker_contrast * (light_sq - dark_sq) / 2
    ground_rgb = jnp.where(checker[:, None] > 0, mid + half, mid - half)
    ground_rgb = ground_rgb * (0.55 + 0.45 * light[2])
    oi = jnp.clip(obj, 0, None)
    nrm = jnp.take_along_axis(n_obj, oi[:, None, None], 1)[:, 0]
    base = jnp.asarray(_PALETTE)[scene["color"][oi]]
    obj_rgb = base * (0.35 + 0.65 * jnp.maximum(jnp.sum(nrm * light, -1), 0.0))[:, None]
    up = jnp.clip(-rays_cam[:, 1] / 2 + 0.5, 0, 1)[:, None]
    sky_rgb = jnp.array([0.75, 0.85, 0.97]) * (0.8 + 0.2 * up)
    rgb = jnp.where((obj >= 0)[:, None], obj_rgb, jnp.where((obj == -1)[:, None], ground_rgb, sky_rgb))

    shp = (height, width)
    return dict(
        video=jnp.clip(rgb, 0, 1).reshape(shp + (3,)),
        depth=jnp.where(hit, t, 0.0).reshape(shp),
        points=jnp.where(hit[:, None], p, 0.0).reshape(shp + (3,)),
        valid=hit.reshape(shp),
        object_id=obj.reshape(shp),
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def _render(seed: jax.Array, traced: dict[str, jax.Array], cfg: ToyworldConfig) -> dict[str, jax.Array]:
    F, H, W = cfg.num_frames, cfg.height, cfg.width
    k_scene, k_cam = jax.random.split(jax.random.key(seed))
    scene = _sample_scene(k_scene, cfg, traced)
    c2w = camera_path(k_cam, scene["motion"], F, traced["jitter"], cfg.camera_motions)
    K = toyworld_intrinsics(H, W, cfg.fov_deg)
    frames = jnp.arange(F, dtype=jnp.float32)
    out = jax.lax.map(lambda a: _render_frame(scene, cfg, a[0], K, a[1], H, W), (c2w, frames))
    if cfg.supersample > 1:
        s = cfg.supersample
        Ks = toyworld_intrinsics(s * H, s * W, cfg.fov_deg)
        fine = jax.lax.map(lambda a: _render_frame(scene, cfg, a[0], Ks, a[1], s * H, s * W)["video"], (c2w, frames))
        out["video"] = fine.reshape(F, H, s, W, s, 3).mean((2, 4))
    obj = out["object_id"]
    moving_px = lambda ids: jnp.where(ids >= 0, scene["moving"][jnp.clip(ids, 0, None)], False)
    vel_px = lambda ids: jnp.where((ids >= 0)[..., None], scene["vel"][jnp.clip(ids, 0, None)], 0.0)
    # Objects translate rigidly: a point of object j moves by vel_j per frame.
    out["dynamic_mask"] = moving_px(obj)
    out["scene_flow"] = vel_px(obj[0])[None] * frames[:, None, None, None]
    out["scene_flow_per_view"] = vel_px(obj)
    out["c2w"] = c2w
    out["intrinsics"] = jnp.broadcast_to(K, (F, 3, 3))
    out["scene"] = scene
    return out


# ----------------------------------------------------------------------------------------------------------------
# Captions


def _caption(scene: dict[str, np.ndarray], motion: str) -> str:
    """The scene (objects, which move) and the camera path. Never the jitter: a model trained on these captions
    must produce shaky and smooth clips for the same prompt, the defect the geometry rewards remove."""
    names = [f"{_COLOR_NAMES[c]} {SHAPES[s]}" for c, s in zip(scene["color"], scene["shape"])]
    art = lambda n: ("an " if n[0] in "aeiou" else "a ") + n
    listed = art(names[0]) if len(names) == 1 else ", ".join(art(n) for n in names[:-1]) + " and " + art(names[-1])
    text = f"{listed[0].upper()}{listed[1:]} on a checkered floor"
    movers = [n for n, m in zip(names, scene["moving"]) if m]
    if movers:
        verb = "slides" if len(movers) == 1 else "slide"
        text += "; the " + " and the ".join(movers) + f" {verb} across the floor"
    else:
        text += _STATIC_PHRASE
    return f"{text}. {_MOTION_PHRASES[motion]}."


_STATIC_PHRASE = "; nothing in the scene moves"


def caption_split(caption: str) -> str:
    """"static" or "dynamic": whether a toyworld caption describes moving objects (read from ``_caption``'s text)."""
    return "static" if _STATIC_PHRASE in caption else "dynamic"


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _config(config: ToyworldConfig | None, **overrides: Any) -> ToyworldConfig:
    cfg = config or ToyworldConfig()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def render_clip(seed: int, num_frames: int | None = None, height: int | None = None, width: int | None = None,
                config: ToyworldConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Render clip ``seed``: a dict of numpy arrays (see the module docstring) plus ``caption`` and ``camera_motion``.

    ``num_frames``, ``height``, ``width`` and any ``ToyworldConfig`` field given as a keyword override ``config``.
    The same seed and config always give the same clip. Compiles once per config (shape); ``jitter``,
    ``dynamic_prob``, ``min_moving`` and ``speed_range`` are traced.
    """
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**31:
        raise ValueError(f"seed must be an int in [0, 2**31), got {seed!r}")
    cfg = _config(config, num_frames=num_frames, height=height, width=width, **overrides)
    static_cfg, traced = _split_config(cfg)  # jitter, dynamic_prob, min_moving, speed_range are traced: no recompile
    out = jax.device_get(_render(jnp.int32(seed), traced, static_cfg))
    scene = out.pop("scene")
    motion = cfg.camera_motions[int(scene["motion"])]
    clip = {k: np.asarray(v) for k, v in out.items()}
    # Object parameters (n objects): frame-0 centres, per-frame velocity, and shape, so tests can check the geometry.
    for k in ("shape", "center", "vel", "half", "sphere_r", "yaw", "moving", "color"):
        clip[f"object_{k}"] = np.asarray(scene[k])
    clip["caption"] = _caption(scene, motion)
    clip["camera_motion"] = motion
    clip["is_dynamic"] = bool(np.any(scene["moving"]))
    return clip


@functools.partial(jax.jit, static_argnames=("cfg",))
def _scenes(seeds: jax.Array, traced: dict[str, jax.Array], cfg: ToyworldConfig):
    return jax.vmap(lambda s: _sample_scene(jax.random.split(jax.random.key(s))[0], cfg, traced))(seeds)


def make_prompts(n: int, seed: int = 0, config: ToyworldConfig | None = None,
                 seeds: Sequence[int] | None = None) -> list[str]:
    """Captions of clips ``seed, seed + 1, ..., seed + n − 1`` (or of ``seeds`` when given; n is then ignored),
    identical to ``render_clip``'s, without rendering."""
    if seeds is None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        seeds = range(seed, seed + n)
    if len(seeds) == 0:
        return []
    cfg = _config(config)
    static_cfg, traced = _split_config(cfg)
    scenes = jax.device_get(_scenes(jnp.asarray(list(seeds), dtype=jnp.int32), traced, static_cfg))
    return [
        _caption({k: v[i] for k, v in scenes.items()}, cfg.camera_motions[int(scenes["motion"][i])])
        for i in range(len(seeds))
    ]


def clip_geometry(clip: dict[str, Any], flow: str = "any4d") -> SceneGeometry:
    """The clip's ground-truth SceneGeometry (z-depth 0 on sky = invalid). ``flow``: "any4d" (``scene_flow``),
    "per_view" (``scene_flow_per_view``) or "none"."""
    flows = {"any4d": "scene_flow", "per_view": "scene_flow_per_view", "none": None}
    if flow not in flows:
        raise ValueError(f"flow must be one of {tuple(flows)}, got {flow!r}")
    f = clip[flows[flow]] if flows[flow] else None
    return SceneGeometry(
        c2w=jnp.asarray(clip["c2w"]), intrinsics=jnp.asarray(clip["intrinsics"]), depth=jnp.asarray(clip["depth"]),
        points=jnp.asarray(clip["points"]), conf=None, scene_flow=None if f is None else jnp.asarray(f),
    ).validate()


class ToyworldSource:
    """Grain random-access data source: ``len(src)`` records, ``src[i]`` = ``render_clip(base_seed + i)`` as a dict of
    numpy arrays (the caption and camera motion as 0-d unicode arrays)."""

    def __init__(self, num_records: int, config: ToyworldConfig | None = None, base_seed: int = 0):
        if num_records < 0:
            raise ValueError(f"num_records must be >= 0, got {num_records}")
        self.num_records = int(num_records)
        self.config = _config(config)
        self.base_seed = int(base_seed)

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self.num_records:
            raise IndexError(f"toyworld record {index} out of range [0, {self.num_records})")
        clip = render_clip(self.base_seed + index, config=self.config)
        clip["caption"] = np.asarray(clip["caption"])
        clip["camera_motion"] = np.asarray(clip["camera_motion"])
        clip["is_dynamic"] = np.asarray(clip["is_dynamic"])
        return clip

    def __repr__(self) -> str:
        return f"ToyworldSource(num_records={self.num_records}, base_seed={self.base_seed}, config={self.config})"
