"""Video files ↔ arrays, and fitting a video to the Wan VAE's frame count and spatial stride.

Arrays are (C, F, H, W) float32 in [-1, 1] (one video; stack to (B, C, F, H, W) with `load_videos`), RGB.
Readers: .mp4/.mov/.mkv/.webm/.avi through imageio-ffmpeg, .gif through Pillow, or a folder of image frames (sorted
by name). Writers: .mp4 (libx264, yuv420p, so H and W must be even) and .gif.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from vggrpo_jax.errors import InputError, PathNotFoundError, first_line

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (so Ctrl-C does not reach ffmpeg): Python code in the forked
# child of a multithreaded process (JAX) can deadlock before exec, and a video read then hangs forever (seen here with
# an undecodable file; imageio-ffmpeg issue 58). This documented switch starts ffmpeg without a preexec_fn.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

__all__ = ["read_video", "write_video", "fit_video", "load_videos", "VideoError", "VideoReadError",
           "largest_valid_frame_count"]

_VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(ValueError):
    """A video file or frame folder cannot be read, or a video cannot be fitted to the requested shape."""


class VideoReadError(VideoError, InputError):
    """A user's video file or frame folder cannot be decoded or used; the message names it."""


def _ffmpeg_reason(err: BaseException) -> str:
    """The reason in an imageio-ffmpeg error, without ffmpeg's banner (version, ~90 lines of build configuration).

    ffmpeg's stderr ends with its own diagnosis ("Invalid data found when processing input"); that last line is kept.
    """
    text = str(err)
    head, _, stderr = text.partition("=== stderr ===")
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    if not lines:
        return first_line(err)
    return f"{first_line(head) if head.strip() else type(err).__name__}: {lines[-1]}"


# --------------------------------------------------------------------------------------------- conversions
def _to_unit(frames: np.ndarray, source: str) -> np.ndarray:
    """(F, H, W[, C]) uint8 → (3, F, H, W) float32 in [-1, 1] (gray replicated, alpha dropped)."""
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4:
        raise VideoReadError(f"{source}: expected frames (F, H, W, C), got shape {frames.shape}")
    c = frames.shape[-1]
    if c == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif c == 4:
        frames = frames[..., :3]
    elif c != 3:
        raise VideoReadError(f"{source}: frames have {c} channels (need 1, 3 or 4)")
    if frames.dtype != np.uint8:
        raise VideoReadError(f"{source}: frames have dtype {frames.dtype} (need 8-bit)")
    x = frames.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)))


def _to_uint8(video: Any) -> np.ndarray:
    """(C, F, H, W) in [-1, 1] → (F, H, W, C) uint8 (values outside [-1, 1] are clipped)."""
    v = np.asarray(video, dtype=np.float32)
    if v.ndim == 5 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 4 or v.shape[0] not in (1, 3):
        raise VideoError(f"write_video: video must be (C, F, H, W) with C in (1, 3), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise VideoError("write_video: video contains NaN or inf")
    u = np.round((np.clip(v, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    u = np.transpose(u, (1, 2, 3, 0))
    return np.repeat(u, 3, axis=-1) if u.shape[-1] == 1 else u


@contextlib.contextmanager
def _quiet_fork() -> Iterator[None]:
    """imageio-ffmpeg runs ffmpeg in a subprocess; JAX warns on every fork of its multithreaded process. A fork that
    immediately execs ffmpeg is safe, so that warning would only be noise next to the user's own messages."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


# --------------------------------------------------------------------------------------------- reading
def _read_frame_dir(path: str) -> np.ndarray:
    import imageio.v3 as iio  # noqa: PLC0415

    names = sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_EXTS))
    if not names:
        raise VideoReadError(f"{path}: folder has no image frames ({', '.join(_IMAGE_EXTS)})")
    frames = []
    for name in names:
        try:
            frame = np.asarray(iio.imread(os.path.join(path, name)))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input, reported with its name
            raise VideoReadError(f"{os.path.join(path, name)}: cannot decode image ({first_line(e)})") from e
        if frame.ndim == 2:
            frame = frame[..., None]
        if frames and frame.shape != frames[0].shape:
            raise VideoReadError(f"{path}: frame {name} has shape {frame.shape}, the first frame {frames[0].shape}")
        frames.append(frame)
    return np.stack(frames)


def _read_file(path: str) -> np.ndarray:
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".gif":
            import imageio.v3 as iio  # noqa: PLC0415

            frames = np.asarray(iio.imread(path, index=None, plugin="pillow", mode="RGB"))
            if frames.ndim == 3:  # a single-frame gif
                frames = frames[None]
        elif ext in _VIDEO_EXTS:
            import imageio.v2 as iio2  # noqa: PLC0415

            with _quiet_fork(), iio2.get_reader(path, format="FFMPEG") as reader:
                frames = np.stack([np.asarray(f) for f in reader])
        else:
            raise VideoReadError(f"{path}: unsupported extension {ext!r} (videos: {_VIDEO_EXTS}, .gif, or a frame folder)")
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - decoder errors of every kind mean a bad file
        raise VideoReadError(f"{path}: cannot decode video ({_ffmpeg_reason(e)})") from e
    return frames


def read_video(path: str) -> np.ndarray:
    """Reads a video file or a folder of frames → (3, F, H, W) float32 in [-1, 1].

    Raises FileNotFoundError for a missing path and VideoError for an undecodable or empty one.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PathNotFoundError(f"video not found: {path}")
    frames = _read_frame_dir(path) if os.path.isdir(path) else _read_file(path)
    if frames.shape[0] == 0:
        raise VideoReadError(f"{path}: video has no frames")
    return _to_unit(frames, path)


# --------------------------------------------------------------------------------------------- writing
def write_video(path: str, video: Any, fps: float = 16.0, quality: float = 8.0) -> None:
    """Writes (C, F, H, W) in [-1, 1] (or (1, C, F, H, W)) to .mp4 (libx264, yuv420p) or .gif.

    quality: imageio-ffmpeg's 0–10 scale for mp4 (10 = best). mp4 needs even H and W (yuv420p chroma).
    """
    path = os.fspath(path)
    frames = _to_uint8(video)
    if fps <= 0:
        raise VideoError(f"write_video: fps must be positive, got {fps}")
    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".mp4":
        f, h, w, _ = frames.shape
        if h % 2 or w % 2:
            raise VideoError(f"write_video: mp4 (yuv420p) needs even height and width, got {h}×{w}")
        import imageio.v2 as iio2  # noqa: PLC0415

        with _quiet_fork(), iio2.get_writer(
            path, format="FFMPEG", fps=fps, codec="libx264", quality=quality, pixelformat="yuv420p",
            macro_block_size=1,
        ) as writer:  # fmt: skip
            for frame in frames:
                writer.append_data(frame)
    elif ext == ".gif":
        from PIL import Image  # noqa: PLC0415

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=max(int(round(1000.0 / fps)), 1), loop=0,
            optimize=False,
        )  # fmt: skip
    else:
        raise VideoError(f"write_video: unsupported extension {ext!r} (use .mp4 or .gif)")


# --------------------------------------------------------------------------------------------- fitting
def largest_valid_frame_count(num_frames: int, temporal_stride: int = 4) -> int:
    """The largest 1 + stride·k that is ≤ num_frames."""
    if num_frames < 1:
        raise VideoError("video has no frames")
    return 1 + (num_frames - 1) // temporal_stride * temporal_stride


def _resize(video: np.ndarray, height: int, width: int) -> np.ndarray:
    import jax  # noqa: PLC0415

    c, f = video.shape[:2]
    out = jax.image.resize(video, (c, f, height, width), method="linear", antialias=True)
    return np.asarray(out, dtype=np.float32)


def fit_video(
    video: np.ndarray,
    num_frames: int | None,
    height: int,
    width: int,
    stride: int = 8,
    temporal_stride: int = 4,
) -> np.ndarray:
    """Fits (C, F, H, W) to (C, num_frames, height, width) for the VAE.

    Time: the central num_frames frames (None = the largest 1 + 4k that fits). Space: scale (antialiased linear) so
    the frame covers height × width keeping the aspect ratio, then center-crop.
    Raises VideoError when num_frames is not 1 + 4k, when the video has fewer frames, or when height/width are not
    positive multiples of the VAE stride.
    """
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4:
        raise VideoError(f"fit_video: video must be (C, F, H, W), got shape {video.shape}")
    c, f, h, w = video.shape
    if num_frames is None:
        num_frames = largest_valid_frame_count(f, temporal_stride)
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        raise VideoError(f"fit_video: num_frames must be 1 + {temporal_stride}k (1, 5, …, 81), got {num_frames}")
    if f < num_frames:
        raise VideoError(f"fit_video: video has {f} frames, {num_frames} are needed")
    for name, size in (("height", height), ("width", width)):
        if size <= 0 or size % stride:
            raise VideoError(f"fit_video: {name} {size} must be a positive multiple of the VAE stride {stride}")
    start = (f - num_frames) // 2
    video = video[:, start : start + num_frames]
    scale = max(height / h, width / w)
    rh, rw = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    if (rh, rw) != (h, w):
        video = _resize(video, rh, rw)
    top, left = (rh - height) // 2, (rw - width) // 2
    video = video[:, :, top : top + height, left : left + width]
    return np.ascontiguousarray(np.clip(video, -1.0, 1.0))


def load_videos(
    paths: Sequence[str], num_frames: int | None, height: int, width: int, stride: int = 8
) -> np.ndarray:
    """Reads and fits several videos → (B, 3, num_frames, height, width) float32 in [-1, 1]."""
    if not paths:
        raise VideoError("load_videos: no paths given")
    videos = [fit_video(read_video(p), num_frames, height, width, stride) for p in paths]
    shapes = {v.shape for v in videos}
    if len(shapes) != 1:  # num_frames=None picks per-video counts
        raise VideoError(f"load_videos: videos fit to different shapes {sorted(shapes)}; pass num_frames")
    return np.stack(videos)
