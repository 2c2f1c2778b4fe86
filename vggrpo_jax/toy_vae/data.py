"""Toy-VAE data: toyworld videos held in memory as uint8, and random crops that are a function of (seed, step).

Batches depend on nothing but (seed, step), so a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import os

import numpy as np

from vggrpo_jax.data import toyworld_tfds


def load_videos(split: str, data_dir: str, config: str, num_clips: int | None = None,
                cache: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Videos of ``split`` in seed order: (uint8 (N, F, H, W, 3), seeds (N,), object masks bool (N, F, H, W)).

    The object masks (pixels showing a box or sphere, from the clips' ``object_id``) give the evaluation's object
    PSNR: objects are ≈ 8 % of the pixels and carry most of the reconstruction error.

    Read once with ``tfds.data_source`` + grain (building the dataset if missing); ``cache`` (an .npz path) keeps
    them for the next run, so a resumed job does not decode every record again. ``num_clips`` takes the lowest seeds.
    """
    loaded = None
    if cache and os.path.exists(cache):
        with np.load(cache) as z:
            if "objects" in z:  # a cache written before the masks were kept is read again
                loaded = z["videos"], z["seeds"], z["objects"]
    if loaded is None:
        ds = toyworld_tfds.load(split, data_dir or None, config)
        recs = sorted(((int(r["seed"]), r["video"], r["object_id"] >= 0) for r in ds.map(
            lambda c: {"seed": c["seed"], "video": c["video"], "object_id": c["object_id"]})), key=lambda r: r[0])
        loaded = (np.stack([r[1] for r in recs]), np.asarray([r[0] for r in recs], np.int64),
                  np.stack([r[2] for r in recs]))
        if cache:
            os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
            tmp = cache + ".tmp.npz"
            np.savez(tmp, videos=loaded[0], seeds=loaded[1], objects=loaded[2])
            os.replace(tmp, cache)
    videos, seeds, objects = loaded
    if num_clips is not None:
        if num_clips > len(seeds):
            raise ValueError(f"data.num_train={num_clips} but the {split} split has {len(seeds)} clips")
        videos, seeds, objects = videos[:num_clips], seeds[:num_clips], objects[:num_clips]
    return videos, seeds, objects


class CropSampler:
    """Random crops (B, 3, f, s, s) float32 in [−1, 1] from uint8 videos (N, F, H, W, 3), drawn from (seed, step).

    Each crop: a random clip, a random start frame (any of the F − f + 1), a random s × s window, (``flip``) a
    random horizontal flip, and with probability ``colour_prob`` a random colour transform (`recolour`).
    """

    def __init__(self, videos: np.ndarray, batch_size: int, frames: int, size: int, seed: int, flip: bool = True,
                 colour_prob: float = 0.0):
        n, f, h, w, _ = videos.shape
        if frames < 1 or (frames - 1) % 4 or frames > f:
            raise ValueError(f"data.crop_frames must be 1 + 4k and at most {f}, got {frames}")
        if size < 8 or size % 8 or size > min(h, w):
            raise ValueError(f"data.crop_size must be a multiple of 8 in [8, {min(h, w)}], got {size}")
        self.videos, self.batch_size, self.frames, self.size = videos, batch_size, frames, size
        if not 0.0 <= colour_prob <= 1.0:
            raise ValueError(f"data.colour_prob must be in [0, 1], got {colour_prob}")
        self.seed, self.flip, self.colour_prob = int(seed), bool(flip), float(colour_prob)

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(step), 0x5EED])
        n, f, h, w, _ = self.videos.shape
        b, t, s = self.batch_size, self.frames, self.size
        idx = rng.integers(0, n, b)
        t0, y0, x0 = rng.integers(0, f - t + 1, b), rng.integers(0, h - s + 1, b), rng.integers(0, w - s + 1, b)
        flip = rng.random(b) < 0.5 if self.flip else np.zeros(b, bool)
        crops = np.stack([self.videos[i, a : a + t, y : y + s, x : x + s] for i, a, y, x in zip(idx, t0, y0, x0)])
        crops[flip] = crops[flip, :, :, ::-1]
        x = toyworld_tfds.video_to_model(crops)
        if self.colour_prob > 0:
            pick = rng.random(b) < self.colour_prob
            x[pick] = recolour(x[pick], rng)
        return x


def recolour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour transform per clip of x (B, 3, F, H, W) in [−1, 1], clipped back to [−1, 1].

    Each pixel splits into its grey level (the RGB mean) and its chroma (the rest); the chroma is rotated about the
    grey axis by a random angle (any hue), scaled by a random gain in [1, 2.5] (more saturated) and shifted by a
    random colour cast of length ≤ 0.5 (so grey floors and pale skies become coloured). Why: in toyworld colour lives
    on a few small objects (≈ 6 % of pixels) and the toy VAE learned to drop it — boxes and spheres decoded as grey
    blobs at ≈ 14 dB; with chroma everywhere in training, the decoder has to carry it.
    """
    k = 1 / np.sqrt(3)  # the grey axis (1, 1, 1)/√3; kx is its cross-product matrix (Rodrigues' rotation)
    kx = np.array([[0, -k, k], [k, 0, -k], [-k, k, 0]], np.float32)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        theta = rng.uniform(-np.pi, np.pi)
        rot = np.eye(3, dtype=np.float32) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)
        cast = rng.normal(size=3).astype(np.float32)
        cast -= cast.mean()
        cast *= rng.uniform(0, 0.5) / max(float(np.linalg.norm(cast)), 1e-6)
        grey = x[i].mean(0, keepdims=True)
        chroma = np.einsum("ij,jfhw->ifhw", rot * rng.uniform(1.0, 2.5), x[i] - grey)
        out[i] = np.clip(grey + chroma + cast[:, None, None, None], -1.0, 1.0)
    return out
