"""Geometry-model training data: toyworld clips at the model's resolution, with exact ground truth, and view sampling.

The geometry model sees frames the way the RGB path feeds it (lgm/correspondence.py): the dataset's video
(`zoo.VIDEO`, 17×64×64) resized, bilinear and antialiased, to the teacher size (56×56 for a stride-2 connector on
8×8 latents: the 14-px patch grid equals the 4×4 token grid). Ground truth at that size is exact: each clip is
re-rendered from its seed and clip spec (`toyworld_tfds.clip_spec`) at the model's resolution — the scene and the
camera path depend on the seed alone, and the re-rendered cameras are checked against the stored ones.

`GeometryCache` keeps per clip: the resized frames (uint8), z-depth, object ids and velocities (the scene flow of
any frame pair follows from them: objects move at constant velocity), cameras. About 0.4 MB per 17×56×56 clip;
built once per (split, size) and saved as an .npz so a resumed job does not render again.

Training examples (`sample_views`) are N views of one clip at frames f_0 + k·d (stride d drawn per example, start
drawn, order reversed with probability ½), so the model sees many camera baselines; evaluation uses the RGB path's
views, frames 0, 4, 8, 12, 16 (`view_frame_indices`). Everything is a function of (seed, step): resumes repeat.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.data.toyworld import ToyworldConfig, render_clip
from vggrpo_jax.data.toyworld_clips import builder_config, load_split

_FIELDS = ("video", "depth", "object_id", "object_vel", "c2w", "intrinsics", "seed", "jitter", "is_dynamic")


@dataclasses.dataclass
class GeometryCache:
    """M clips of F frames at H×W (see the module doc). video uint8 (M, F, H, W, 3); depth f32 (M, F, H, W) z-depth,
    0 on sky; object_id int8 (M, F, H, W) (−2 sky, −1 ground, j object); object_vel f32 (M, n, 3) per frame;
    c2w f32 (M, F, 4, 4); intrinsics f32 (M, 3, 3); seed int64 (M,); jitter f32 (M,); is_dynamic bool (M,)."""

    video: np.ndarray
    depth: np.ndarray
    object_id: np.ndarray
    object_vel: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    seed: np.ndarray
    jitter: np.ndarray
    is_dynamic: np.ndarray

    def __len__(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[1])

    def velocity(self, clip: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """(B,) clips, (B,) frames → (B, H, W, 3) world velocity per frame of the surface each pixel shows."""
        ids = self.object_id[clip, frame].astype(np.int64)  # (B, H, W)
        vel = self.object_vel[clip]  # (B, n, 3)
        picked = np.take_along_axis(vel[:, None, None], np.clip(ids, 0, None)[..., None, None], axis=3)[..., 0, :]
        return np.where((ids >= 0)[..., None], picked, 0.0).astype(np.float32)

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        np.savez(tmp, **{k: getattr(self, k) for k in _FIELDS})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "GeometryCache":
        with np.load(path) as f:
            missing = [k for k in _FIELDS if k not in f]
            if missing:
                raise ValueError(f"{path}: not a geometry cache (missing {missing}); delete it to rebuild")
            return cls(**{k: f[k] for k in _FIELDS})


def resize_video(video: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """uint8 (F, H, W, 3) → uint8 (F, h, w, 3): bilinear, antialiased when shrinking (as lgm's `teacher_images`)."""
    return np.asarray(_resize(jnp.asarray(video), tuple(int(x) for x in hw)))


def _resize_impl(video: jax.Array, hw: tuple[int, int]) -> jax.Array:
    x = video.astype(jnp.float32) / 255.0
    if x.shape[1:3] != hw:
        x = jax.image.resize(x, (x.shape[0],) + hw + (3,), method="bilinear", antialias=True)
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


_resize = jax.jit(_resize_impl, static_argnums=1)


def build_cache(clips: Sequence[dict], image_hw: Sequence[int], data_config: str = "zoo") -> GeometryCache:
    """A cache of decoded toyworld clips (a `toyworld_tfds.load` split, or any sequence of `toyworld_tfds.decode`d
    records): frames resized to `image_hw`, ground truth re-rendered at `image_hw` from each clip's seed and spec.
    `data_config` names the toyworld builder config the clips come from (its scene settings). Raises if a
    re-rendered camera differs from the stored one."""
    # Only geometry is taken from the re-render (colour comes from the stored clip), so one ray per pixel suffices.
    base = dataclasses.replace(builder_config(data_config).toyworld_config(), supersample=1)
    num_clips = len(clips)
    h, w = (int(x) for x in image_hw)
    rows = {k: [] for k in _FIELDS}
    for i in range(num_clips):
        clip = clips[i]
        f = clip["video"].shape[0]
        spec = T.clip_spec(clip["seed"])
        gt = render_clip(clip["seed"], config=spec.config(dataclasses.replace(base, num_frames=f, height=h, width=w)))
        if not np.allclose(gt["c2w"], clip["c2w"], atol=1e-4):
            raise ValueError(f"toyworld seed {clip['seed']}: re-rendered cameras differ from the stored ones "
                             f"(dataset built by another toyworld version?)")
        rows["video"].append(resize_video(clip["video"], (h, w)))
        rows["depth"].append(gt["depth"].astype(np.float32))
        rows["object_id"].append(gt["object_id"].astype(np.int8))
        rows["object_vel"].append(gt["object_vel"].astype(np.float32))
        rows["c2w"].append(gt["c2w"].astype(np.float32))
        rows["intrinsics"].append(gt["intrinsics"][0].astype(np.float32))
        rows["seed"].append(clip["seed"])
        rows["jitter"].append(clip["jitter"])
        rows["is_dynamic"].append(clip["is_dynamic"])
        if (i + 1) % 256 == 0:
            logging.info("geometry cache: %d / %d clips", i + 1, num_clips)
    return GeometryCache(**{k: np.stack([np.asarray(v) for v in rows[k]]) for k in _FIELDS})


def cached(path: str, split: str, num_clips: int, image_hw: Sequence[int], **kwargs) -> GeometryCache:
    """`build_cache` of `load_split` once, then the .npz at `path` (rebuilt if its size or resolution differ)."""
    if os.path.exists(path):
        cache = GeometryCache.load(path)
        if len(cache) == num_clips and cache.video.shape[2:4] == tuple(image_hw):
            return cache
        logging.warning("%s holds %d clips at %s, want %d at %s: rebuilding", path, len(cache),
                        cache.video.shape[2:4], num_clips, tuple(image_hw))
    cache = build_cache(load_split(split, num_clips, **kwargs), image_hw, kwargs.get("data_config", "zoo"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cache.save(path)
    return cache


def gather(cache: GeometryCache, clips: np.ndarray, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays `make_targets` takes for clips (B,) at frames (B, N)."""
    c = clips[:, None]
    return dict(
        video=cache.video[c, frames], depth_z=cache.depth[c, frames],
        velocity0=cache.velocity(clips, frames[:, 0]), c2w=cache.c2w[c, frames],
        intrinsics=cache.intrinsics[clips], frame_offsets=(frames - frames[:, :1]).astype(np.float32),
    )


def sample_views(cache: GeometryCache, seed: int, step: int, batch_size: int, num_views: int,
                 strides: Sequence[int] = (2, 3, 4, 4), reverse_prob: float = 0.5) -> dict[str, np.ndarray]:
    """Training batch `step`: `batch_size` random clips, each with `num_views` frames f_0 + k·d (see module doc)."""
    rng = np.random.default_rng([int(seed), int(step), 0x6E0])
    f = cache.num_frames
    strides = [d for d in strides if (num_views - 1) * d < f]
    if not strides:
        raise ValueError(f"no view stride fits {num_views} views into {f} frames")
    clips = rng.integers(0, len(cache), batch_size)
    d = rng.choice(np.asarray(strides), batch_size)
    start = rng.integers(0, f - (num_views - 1) * d)
    frames = start[:, None] + d[:, None] * np.arange(num_views)
    flip = rng.random(batch_size) < reverse_prob
    frames = np.where(flip[:, None], frames[:, ::-1], frames)
    return gather(cache, clips, frames)


__all__ = ["GeometryCache", "build_cache", "cached", "gather", "resize_video", "sample_views"]
