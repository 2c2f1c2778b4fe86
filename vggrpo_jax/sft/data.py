"""Fine-tuning data: VAE latents of the training clips, cached once, and the captions' text embeddings.

Latents are the VAE posterior means, normalised (`WanVAE.normalize_latents`: what the DiT sees), stored as
<dir>/<split>.npy (M, C, F', H', W') float32 — memory-mapped when read, so a large real-data cache never has to fit in
host memory — with <dir>/<split>.json listing each clip's caption and id. A cache is built once (resumed jobs and
later runs reuse it) and checked against the VAE and clip shape it was made with.

Clip sources:
  toyworld   the toyworld dataset's split (data/toyworld_clips.py), video = `toyworld_tfds.video_to_model`
  videos     a .jsonl of {"video": path, "caption": text} (one per line; paths relative to the file), each read and
             fitted to (num_frames, height, width) by data/video.py — the paper's SFT baseline on real clips

Text: `CaptionEmbeddings.batch(captions)` gives the (B, L, D) zero-padded UMT5 embeddings, from the on-disk
embedding cache (data/text.py; filled by tools/cache_text_embeddings.py — no encoder is loaded), or, for toy runs,
from the toy encoder, computed once for every caption.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from vggrpo_jax.data.text import pad_embeddings


def toyworld_clips(split: str, num_clips: int, *, source: str, data_dir: str | None, data_config: str
                   ) -> Iterator[tuple[np.ndarray, str, str]]:
    """(video (3, F, H, W) in [−1, 1], caption, clip id) of the toyworld split's first `num_clips` seeds."""
    from vggrpo_jax.data import toyworld_tfds as T  # noqa: PLC0415
    from vggrpo_jax.data.toyworld_clips import load_split  # noqa: PLC0415

    clips = load_split(split, num_clips, source=source, data_dir=data_dir, data_config=data_config)
    for i in range(len(clips)):
        clip = clips[i]
        yield T.video_to_model(clip["video"]), clip["caption"], f"toyworld:{clip['seed']}"


def read_video_list(path: str) -> list[dict[str, str]]:
    """The rows of a .jsonl video list; raises naming the line of a row without "video" / "caption"."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.videos: no video list at {path}")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or "video" not in row or "caption" not in row:
                raise ValueError(f"{path}:{n}: each line must be an object with 'video' and 'caption'")
            video = row["video"] if os.path.isabs(row["video"]) else os.path.join(os.path.dirname(path), row["video"])
            rows.append({"video": video, "caption": str(row["caption"])})
    if not rows:
        raise ValueError(f"{path}: the video list is empty")
    return rows


def listed_clips(rows: Sequence[dict[str, str]], num_frames: int, height: int, width: int
                 ) -> Iterator[tuple[np.ndarray, str, str]]:
    from vggrpo_jax.data.video import fit_video, read_video  # noqa: PLC0415

    for row in rows:
        yield fit_video(read_video(row["video"]), num_frames, height, width), row["caption"], row["video"]


def build_latents(vae: Any, clips: Iterator[tuple[np.ndarray, str, str]], num_clips: int, path: str,
                  batch_size: int, identity: dict) -> None:
    """Encodes `num_clips` clips in batches and writes <path>.npy + <path>.json (atomically, at the end)."""
    encode = jax.jit(lambda v: vae.normalize_latents(vae.encode(v)[0]))
    out = None
    captions, ids = [], []
    buf: list[np.ndarray] = []
    done = 0

    def flush():
        nonlocal out, done
        if not buf:
            return
        n = len(buf)
        x = np.stack(buf + [buf[-1]] * (batch_size - n))  # one compiled batch shape
        z = np.asarray(jax.device_get(encode(x)), np.float32)[:n]
        if out is None:
            out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32,
                                            shape=(num_clips,) + z.shape[1:])
        out[done: done + n] = z
        done += n
        buf.clear()

    for video, caption, cid in clips:
        buf.append(np.asarray(video, np.float32))
        captions.append(caption)
        ids.append(cid)
        if len(buf) == batch_size:
            flush()
            if done % (batch_size * 16) == 0:
                logging.info("latents %s: %d / %d clips", os.path.basename(path), done, num_clips)
    flush()
    if done != num_clips:
        raise ValueError(f"latent cache {path}: got {done} clips, expected {num_clips}")
    out.flush()
    del out
    os.replace(path + ".tmp.npy", path + ".npy")
    tmp = path + ".tmp.json"
    with open(tmp, "w") as f:
        json.dump({"identity": identity, "captions": captions, "ids": ids}, f)
    os.replace(tmp, path + ".json")


class LatentSet:
    """latents (M, C, F', H', W') float32 (memory-mapped), captions [M], ids [M]."""

    def __init__(self, path: str, identity: dict | None = None):
        with open(path + ".json") as f:
            meta = json.load(f)
        if identity is not None and meta["identity"] != identity:
            raise ValueError(f"latent cache {path}: made with {meta['identity']}, this run needs {identity}; "
                             f"delete {path}.npy/.json to rebuild")
        self.latents = np.load(path + ".npy", mmap_mode="r")
        self.captions = list(meta["captions"])
        self.ids = list(meta["ids"])
        if len(self.captions) != self.latents.shape[0]:
            raise ValueError(f"latent cache {path}: {self.latents.shape[0]} latents but {len(self.captions)} captions")

    def __len__(self) -> int:
        return int(self.latents.shape[0])


def cached_latents(path: str, identity: dict, make_clips, num_clips: int, vae_fn, batch_size: int) -> LatentSet:
    """The LatentSet at `path`, built first when missing (`make_clips()` → clip iterator, `vae_fn()` → VAE)."""
    if not (os.path.exists(path + ".npy") and os.path.exists(path + ".json")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        build_latents(vae_fn(), make_clips(), num_clips, path, batch_size, identity)
    return LatentSet(path, identity)


class CaptionEmbeddings:
    """caption → (L, D) trimmed embedding; `batch(captions)` → (B, max_length, D) zero-padded float32.

    From a dict filled once (`from_encoder`, toy runs) or from an on-disk `EmbeddingCache` (`from_cache`)."""

    def __init__(self, max_length: int, table: dict[str, np.ndarray] | None = None, cache: Any = None):
        self.max_length = int(max_length)
        self.table = table
        self.cache = cache

    @classmethod
    def from_encoder(cls, encoder: Any, captions: Sequence[str], max_length: int) -> "CaptionEmbeddings":
        unique = sorted(set(captions))
        return cls(max_length, table=dict(zip(unique, encoder.encode_trimmed(unique))))

    @classmethod
    def from_cache(cls, cache: Any, captions: Sequence[str]) -> "CaptionEmbeddings":
        missing = cache.missing(sorted(set(captions)))
        if missing:
            raise KeyError(f"{len(missing)} caption(s) are not in the text-embedding cache {cache.dir} (fill it with "
                           f"tools/cache_text_embeddings.py): {missing[:3]}")
        return cls(cache.max_length, cache=cache)

    @property
    def dim(self) -> int:
        first = next(iter(self.table.values())) if self.table is not None else None
        return int(first.shape[-1]) if first is not None else int(self.batch([""])[0].shape[-1])

    def batch(self, captions: Sequence[str]) -> np.ndarray:
        if self.table is not None:
            return pad_embeddings([self.table[c] for c in captions], self.max_length)[0]
        return self.cache.load_batch(list(captions))[0]


__all__ = ["CaptionEmbeddings", "LatentSet", "build_latents", "cached_latents", "listed_clips", "read_video_list",
           "toyworld_clips"]
