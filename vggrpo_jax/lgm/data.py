"""Calibration data for the LGM and the on-disk cache of teacher targets.

Clip sources (random access, grain `MapDataset.source`-compatible; each item is a dict):
  ToyworldClips      procedural scenes rendered by vggrpo_jax.data.toyworld (built in; ground truth unused here)
  ToyworldDatasetClips  a split of a toyworld dataset (the zoo's), rendered by seed as its builder stores it
  VideoDirectoryClips real videos: every video file under a directory, read and fitted to (F, H, W) by
                     vggrpo_jax.data.video (`read_video`, `fit_video`)
  GeneratedClips     samples of the video model: *.npz files with `latents` (C, F', H', W') NORMALISED latents (what
                     the DiT produced) and optionally `video` (3, F, H, W) in [−1, 1]; without a video the clip is
                     decoded by the VAE for the teacher (that is what the RGB reward sees).
Items: {"video": (3, F, H, W) float32 in [−1, 1]} and/or {"latents": (C, F', H', W') float32}.
The paper trains on a mix of generated and real videos: the cache holds the union of all configured sources, so the
mix is set by how many clips each source contributes.

Teacher cache. `build_teacher_cache` runs, per batch of clips and exactly once per clip: VAE encode (posterior mean,
normalised) and the teacher Φ on the view frames (lgm/teacher.py), and writes shards

    <dir>/shard_00000/{latents, tokens_l<ℓ>, hook0, tap<k>, out_<field>}.npy    each (S, ...) for S clips

A shard directory is written under a temporary name and renamed when complete, so an interrupted build resumes at
the first missing shard; `cache.json` (written last) records the fingerprint of everything that determines the
targets, the array shapes and the per-feature variances (for the relative feature errors of align.py). Opening a
cache whose fingerprint differs from the requested one raises.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any, Callable, Iterable, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.errors import ConfigError, InputError, PathNotFoundError
from vggrpo_jax.lgm.correspondence import make_correspondence, num_latent_frames, teacher_images
from vggrpo_jax.lgm.teacher import output_fields, teacher_forward

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")
CACHE_FORMAT = "vggrpo_lgm_cache/1"


# ------------------------------------------------------------------------------------------------ clip sources
class ToyworldClips:
    """Clips i = 0..n−1 rendered from seed + i by toyworld.render_clip, as VAE-range videos (3, F, H, W)."""

    def __init__(self, num_clips: int, *, seed: int, num_frames: int, height: int, width: int, **render_kwargs: Any):
        num_latent_frames(num_frames)  # raises for a length the VAE cannot encode
        self.num_clips, self.seed = int(num_clips), int(seed)
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.render_kwargs = dict(render_kwargs)

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, i: int) -> dict:
        from vggrpo_jax.data.toyworld import render_clip  # noqa: PLC0415

        if not 0 <= i < self.num_clips:
            raise IndexError(f"toyworld clip {i} out of range 0..{self.num_clips - 1}")
        clip = render_clip(self.seed + i, self.num_frames, self.height, self.width, **self.render_kwargs)
        rgb = clip["video"] if isinstance(clip, dict) else clip.video
        rgb = np.asarray(rgb, np.float32)  # (F, H, W, 3) in [0, 1]
        return {"video": np.transpose(rgb, (3, 0, 1, 2)) * 2.0 - 1.0}

    def describe(self) -> dict:
        return {"kind": "toyworld", "num_clips": self.num_clips, "seed": self.seed, "num_frames": self.num_frames,
                "height": self.height, "width": self.width, **self.render_kwargs}


class ToyworldDatasetClips:
    """Clips of a split of the toyworld dataset (data/toyworld_tfds.py builder config `config`, e.g. the zoo's):
    the first `num_clips` seeds of `split`, rendered exactly as the builder stores them (uint8, their jitter and
    motion drawn per seed), as VAE-range videos (3, F, H, W). Rendering by seed needs no prepared dataset."""

    def __init__(self, config: str, split: str, num_clips: int, *, num_frames: int, height: int, width: int):
        from vggrpo_jax.data import toyworld_tfds as T  # noqa: PLC0415

        try:
            builder = T.builder_config(config)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"config.data.toyworld.dataset={config!r}: {e}") from None
        self.base = builder.toyworld_config()
        shape = (self.base.num_frames, self.base.height, self.base.width)
        if shape != (int(num_frames), int(height), int(width)):
            raise ConfigError(f"config.data.toyworld.dataset={config!r} holds clips of {shape[0]}×{shape[1]}×"
                              f"{shape[2]}; data.num_frames/height/width are {num_frames}×{height}×{width}")
        self.config, self.split = config, split
        self.seeds = T.split_seeds(split, int(num_clips), 0) if split == "train" else T.split_seeds(split, 0,
                                                                                                      int(num_clips))

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> dict:
        from vggrpo_jax.data import toyworld_tfds as T  # noqa: PLC0415

        if not 0 <= i < len(self.seeds):
            raise IndexError(f"toyworld {self.split} clip {i} out of range 0..{len(self.seeds) - 1}")
        return {"video": T.video_to_model(T.render_record(self.seeds[i], self.base)["video"])}

    def describe(self) -> dict:
        return {"kind": "toyworld_dataset", "config": self.config, "split": self.split,
                "seeds": [self.seeds.start, self.seeds.stop]}


class VideoDirectoryClips:
    """Every video file under `directory` (sorted, recursive), fitted to (num_frames, height, width)."""

    def __init__(self, directory: str, *, num_frames: int, height: int, width: int, max_clips: int = 0):
        if not os.path.isdir(directory):
            raise PathNotFoundError(f"calibration video directory {directory!r}: no such directory (config.data.videos.path)")
        files = sorted(
            p for p in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
            if p.lower().endswith(VIDEO_EXTENSIONS)
        )
        if not files:
            raise PathNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {directory!r} "
                                    "(config.data.videos.path)")
        num_latent_frames(num_frames)
        self.files = files[: max_clips or None]
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        from vggrpo_jax.data.video import fit_video, read_video  # noqa: PLC0415

        # read_video: (3, F, H, W) in [−1, 1]; fit_video: the central F frames, scaled to cover and center-cropped.
        from vggrpo_jax.data.video import VideoError, VideoReadError  # noqa: PLC0415

        try:
            video = np.asarray(fit_video(read_video(self.files[i]), self.num_frames, self.height, self.width),
                               np.float32)
        except VideoError as err:  # fit_video's messages describe the shapes, not the file they came from
            text = str(err)
            raise VideoReadError(text if text.startswith(self.files[i]) else f"{self.files[i]}: {text}") from None
        if video.shape != (3, self.num_frames, self.height, self.width):
            raise ValueError(f"{self.files[i]}: fitted video has shape {video.shape}, expected "
                             f"{(3, self.num_frames, self.height, self.width)}")
        return {"video": video}

    def describe(self) -> dict:
        return {"kind": "videos", "files": [os.path.basename(f) for f in self.files], "num_frames": self.num_frames,
                "height": self.height, "width": self.width}


class GeneratedClips:
    """Generated samples: *.npz files with `latents` (normalised, (C, F', H', W')) and optional `video`."""

    def __init__(self, directory: str, *, max_clips: int = 0):
        if not os.path.isdir(directory):
            raise PathNotFoundError(f"generated-sample directory {directory!r}: no such directory (config.data.generated.path)")
        self.files = sorted(glob.glob(os.path.join(directory, "*.npz")))[: max_clips or None]
        if not self.files:
            raise PathNotFoundError(f"no .npz samples under {directory!r} (config.data.generated.path)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        with np.load(self.files[i]) as z:
            if "latents" not in z:
                raise InputError(f"{self.files[i]}: a generated sample needs 'latents' (C, F', H', W'); has {list(z)}")
            item = {"latents": np.asarray(z["latents"], np.float32)}
            if "video" in z:
                item["video"] = np.asarray(z["video"], np.float32)
        if item["latents"].ndim != 4:
            raise InputError(f"{self.files[i]}: latents must be (C, F', H', W'), got {item['latents'].shape}")
        return item

    def describe(self) -> dict:
        return {"kind": "generated", "files": [os.path.basename(f) for f in self.files]}


class Subset:
    """Indices [start, stop) of a source."""

    def __init__(self, source: Any, start: int, stop: int):
        self.source, self.start, self.stop = source, int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source[self.start + i]

    def describe(self) -> dict:
        return {**self.source.describe(), "range": [self.start, self.stop]}


class Concat:
    """The union of several sources, in order."""

    def __init__(self, sources: Sequence[Any]):
        self.sources = [s for s in sources if len(s)]
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        if not 0 <= j < len(self.sources):
            raise IndexError(i)
        return self.sources[j][i - int(self.offsets[j])]

    def describe(self) -> list:
        return [s.describe() for s in self.sources]


def split_heldout(source: Any, fraction: float) -> tuple[Subset, Subset]:
    """(train, held-out): the last round(n·fraction) clips (at least 1 when fraction > 0) are held out."""
    n = len(source)
    k = 0 if fraction <= 0 else max(1, int(round(n * fraction)))
    if k >= n:
        raise ConfigError(f"config.data.heldout_fraction={fraction} leaves no training clips out of {n}")
    return Subset(source, 0, n - k), Subset(source, n - k, n)


# ------------------------------------------------------------------------------------------------ teacher cache
def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_target_fn(vae: Any, any4d: Any, layers: Sequence[int], *, spatial_stride: int, view_frame_rule: str):
    """A jitted (video?, latents?) → dict of per-clip targets. Exactly one of video / latents drives the encode."""
    graphdef, state = nnx.split((vae, any4d))
    layers = tuple(sorted({int(l) for l in layers}))

    def targets(state, video, latents):
        vae, any4d = nnx.merge(graphdef, state)
        if latents is None:
            mean, _ = vae.encode(video)
            latents = vae.normalize_latents(mean)
        if video is None:
            video = vae.decode(vae.denormalize_latents(latents))
        corr = make_correspondence(
            latents.shape, temporal_stride=vae.config.temporal_stride, spatial_stride=spatial_stride,
            patch_size=any4d.config.patch_size, rule=view_frame_rule,
        )
        if video.shape[2] <= max(corr.frames):
            raise ValueError(f"clip has {video.shape[2]} frames, the views need frame {max(corr.frames)}")
        images = teacher_images(video, corr)
        t = teacher_forward(any4d, images, layers)
        out = {"latents": latents, "hook0": t["hook0"]}
        out.update({f"tokens_l{l}": v for l, v in t["tokens"].items()})
        out.update({f"tap{k}": v for k, v in t["taps"].items()})
        out.update({f"out_{k}": v for k, v in output_fields(t["outputs"]).items()})
        return out

    jitted = jax.jit(targets)
    return lambda video=None, latents=None: jitted(state, video, latents)


def _stack(items: list[dict], key: str) -> np.ndarray | None:
    have = [key in it for it in items]
    if not any(have):
        return None
    if not all(have):
        raise ValueError(f"a batch mixes clips with and without {key!r}; batch sources separately")
    return np.stack([it[key] for it in items])


class _Stats:
    """Streaming per-channel mean/variance of every feature (last axis = channels)."""

    def __init__(self):
        self.s1, self.s2, self.n = {}, {}, {}

    def add(self, key: str, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        self.s1[key] = self.s1.get(key, 0.0) + x.sum(0)
        self.s2[key] = self.s2.get(key, 0.0) + (x * x).sum(0)
        self.n[key] = self.n.get(key, 0) + x.shape[0]

    def variances(self) -> dict[str, float]:
        out = {}
        for k in self.s1:
            m = self.s1[k] / self.n[k]
            out[k] = float(np.mean(np.maximum(self.s2[k] / self.n[k] - m * m, 0.0)))
        return out


FEATURE_PREFIXES = ("tokens_l", "tap", "hook0")


def build_teacher_cache(
    directory: str,
    source: Any,
    target_fn: Callable[..., dict],
    *,
    identity: dict,
    batch_size: int = 4,
    shard_size: int = 64,
    dtype: str = "float32",
    progress: bool = True,
) -> "TeacherCache":
    """Runs the teacher once per clip of `source` and writes the cache (see module doc); resumes a partial build.

    identity: everything that determines the targets (models, layers, correspondence, source description); its
      fingerprint is stored and checked.
    """
    directory = os.path.abspath(directory)
    fp = fingerprint({"identity": identity, "source": source.describe(), "dtype": dtype})
    manifest_path = os.path.join(directory, "cache.json")
    if os.path.exists(manifest_path):
        cache = TeacherCache(directory)
        if cache.manifest["fingerprint"] != fp:
            raise ValueError(
                f"{directory} holds a teacher cache for a different setup (fingerprint "
                f"{cache.manifest['fingerprint']} ≠ {fp}); use another cache directory or delete it"
            )
        return cache
    if shard_size % batch_size:
        raise ValueError(f"cache shard_size {shard_size} must be a multiple of batch_size {batch_size}")
    os.makedirs(directory, exist_ok=True)
    store = np.float16 if dtype == "float16" else np.float32
    n = len(source)
    shards = []
    num_shards = -(-n // shard_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=n, desc="teacher cache", leave=False, dynamic_ncols=True)
    for s in range(num_shards):
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        name = f"shard_{s:05d}"
        final = os.path.join(directory, name)
        shards.append({"name": name, "count": hi - lo})
        if os.path.isdir(final):
            if bar is not None:
                bar.update(hi - lo)
            continue
        parts: dict[str, list] = {}
        for b0 in range(lo, hi, batch_size):
            items = [source[i] for i in range(b0, min(hi, b0 + batch_size))]
            video, latents = _stack(items, "video"), _stack(items, "latents")
            out = target_fn(video=None if video is None else jnp.asarray(video),
                            latents=None if latents is None else jnp.asarray(latents))
            for k, v in out.items():
                parts.setdefault(k, []).append(np.asarray(v))
            if bar is not None:
                bar.update(len(items))
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for k, chunks in parts.items():
            arr = np.concatenate(chunks)
            keep32 = k == "latents" or k.startswith("out_")
            np.save(os.path.join(tmp, f"{k}.npy"), arr if keep32 else arr.astype(store))
        os.replace(tmp, final)
    if bar is not None:
        bar.close()
    # Shapes and variances from the written shards (also covers shards written by an earlier, interrupted build).
    stats = _Stats()
    shapes: dict[str, list] = {}
    for sh in shards:
        for path in sorted(glob.glob(os.path.join(directory, sh["name"], "*.npy"))):
            key = os.path.basename(path)[:-4]
            arr = np.load(path, mmap_mode="r")
            shapes[key] = list(arr.shape[1:])
            if key.startswith(FEATURE_PREFIXES):
                stats.add(key, arr)
    manifest = {"format": CACHE_FORMAT, "fingerprint": fp, "num_clips": n, "shards": shards, "shapes": shapes,
                "variances": stats.variances(), "identity": identity}
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, default=str)
    os.replace(tmp, manifest_path)
    return TeacherCache(directory)


class TeacherCache:
    """Read access to a built cache: len, random access by clip, per-feature variances."""

    def __init__(self, directory: str):
        path = os.path.join(directory, "cache.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no complete teacher cache at {directory} (missing cache.json)")
        with open(path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path}: format {self.manifest.get('format')!r} is not {CACHE_FORMAT!r}")
        self.directory = directory
        self.offsets = np.cumsum([0] + [s["count"] for s in self.manifest["shards"]])
        self._open: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.manifest["num_clips"])

    @property
    def keys(self) -> list[str]:
        return sorted(self.manifest["shapes"])

    @property
    def variances(self) -> dict[str, float]:
        return dict(self.manifest["variances"])

    def _array(self, shard: int, key: str) -> np.ndarray:
        if (shard, key) not in self._open:
            if key not in self.manifest["shapes"]:
                raise KeyError(f"teacher cache {self.directory} has no {key!r}; it holds {self.keys}")
            name = self.manifest["shards"][shard]["name"]
            self._open[(shard, key)] = np.load(os.path.join(self.directory, name, f"{key}.npy"), mmap_mode="r")
        return self._open[(shard, key)]

    def get(self, i: int, keys: Iterable[str]) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range 0..{len(self) - 1}")
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - int(self.offsets[s])
        return {k: np.asarray(self._array(s, k)[j], np.float32) for k in keys}

    def all(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(keys)
        items = [self.get(i, keys) for i in range(len(self))]
        return {k: np.stack([it[k] for it in items]) for k in keys}


class CacheSource:
    """A grain random-access source over selected cache keys."""

    def __init__(self, cache: TeacherCache, keys: Sequence[str]):
        self.cache, self.keys = cache, list(keys)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        return self.cache.get(i, self.keys)


def batch_fn(cache: TeacherCache, keys: Sequence[str], batch_size: int, seed: int) -> Callable[[int], dict]:
    """step → batch: a grain MapDataset (shuffled per epoch with `seed`, repeated, batched), indexed by step.

    Random access by step makes the data position part of the step counter: resuming at step s reads exactly the
    batches an uninterrupted run would have read.
    """
    if batch_size > len(cache):
        raise ValueError(f"batch size {batch_size} exceeds the {len(cache)} cached clips")
    ds = grain.MapDataset.source(CacheSource(cache, keys)).shuffle(seed=seed).repeat().batch(batch_size)
    return lambda step: ds[int(step)]


__all__ = [
    "CacheSource",
    "Concat",
    "GeneratedClips",
    "Subset",
    "TeacherCache",
    "ToyworldClips",
    "ToyworldDatasetClips",
    "VideoDirectoryClips",
    "batch_fn",
    "build_teacher_cache",
    "fingerprint",
    "make_target_fn",
    "split_heldout",
]
