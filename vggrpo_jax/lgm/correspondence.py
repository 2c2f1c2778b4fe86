"""Where latents, geometry views and teacher frames meet: the temporal and spatial correspondence of the LGM.

Temporal. The Wan VAE is causal with temporal stride s = 4: latent frame 0 encodes video frame 0 alone, and latent
frame k ≥ 1 encodes video frames s·k − 3 .. s·k (four frames). The connector keeps every latent frame (time stride 1),
so latent frame k becomes geometry view k and a clip of F = 1 + s·(F' − 1) frames gives N = F' views (81 → 21).

Each view has to *stand for* one video frame, because the teacher Φ sees single RGB frames. The choice is a rule:

    "last"   view k ↔ frame s·k              (default: the newest frame of the group; for k = 0 it is frame 0)
    "first"  view k ↔ frame max(0, s·k − 3)  (the oldest frame of the group)
    "center" view k ↔ frame max(0, s·k − 1)  (a middle frame of the group, rounded toward the newest)

"last" is the default: every latent frame of a causal VAE has seen its last frame, frame 0 ↔ frame 0 holds for all
rules, and the views fall on a uniform grid 0, s, 2s, … of the video.

Spatial. The VAE downsamples by v (8 for Wan2.1, 16 for Wan2.2); the connector's spatial stride c (2 for Wan2.1,
1 for Wan2.2) turns the (H', W') latent grid into the (h, w) token grid, h = ceil(H'/c). One token covers v·c pixels
(16×16 for both Wan VAEs). The teacher's patch is p = 14 pixels, so teacher frames are resized to (p·h, p·w): the
teacher's patch grid then *is* the connector's token grid, token for token (480×832 → latent 60×104 → 30×52 tokens →
teacher input 420×728). The LGM's dense outputs are produced at the teacher resolution (p·h, p·w) too, so the latent
and the RGB path return maps of the same size.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax.models.wan.vae_config import check_num_frames

VIEW_FRAME_RULES = ("last", "first", "center")


def num_video_frames(num_latent_frames: int, temporal_stride: int = 4) -> int:
    """F = 1 + s·(F' − 1): the video length a causal VAE maps onto F' latent frames."""
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be ≥ 1, got {num_latent_frames}")
    return 1 + temporal_stride * (num_latent_frames - 1)


def num_latent_frames(num_frames: int, temporal_stride: int = 4) -> int:
    """F' = 1 + (F − 1) // s; raises ValueError unless F = 1 + s·k (the only lengths the VAE encodes exactly)."""
    check_num_frames(num_frames, temporal_stride)
    return 1 + (num_frames - 1) // temporal_stride


def latent_frame_span(k: int, temporal_stride: int = 4) -> tuple[int, int]:
    """The inclusive range of video frames that latent frame k encodes: (0, 0) for k = 0, else (s·k − s + 1, s·k)."""
    if k < 0:
        raise ValueError(f"latent frame index must be ≥ 0, got {k}")
    if k == 0:
        return 0, 0
    return temporal_stride * k - temporal_stride + 1, temporal_stride * k


def view_frame_indices(num_latent_frames: int, temporal_stride: int = 4, rule: str = "last") -> np.ndarray:
    """Video frame index that each geometry view (= latent frame) stands for, shape (F',) int32. See module doc."""
    if rule not in VIEW_FRAME_RULES:
        raise ValueError(f"view frame rule {rule!r} is not one of {VIEW_FRAME_RULES}")
    out = []
    for k in range(num_latent_frames):
        lo, hi = latent_frame_span(k, temporal_stride)
        out.append({"last": hi, "first": lo, "center": max(lo, hi - (temporal_stride - 1) // 2)}[rule])
    return np.asarray(out, np.int32)


def token_grid(latent_hw: Sequence[int], spatial_stride: int, kernel: int | None = None, padding: int | None = None) -> tuple[int, int]:
    """(h, w) token grid of a connector with this spatial stride (and conv kernel/padding) over an (H', W') latent.

    With the default kernel k = 2·padding + 1 this is ceil(H'/c); other kernels follow the usual conv arithmetic.
    """
    hh, ww = (int(x) for x in latent_hw)
    if kernel is None:
        return -(-hh // spatial_stride), -(-ww // spatial_stride)
    pad = (kernel - 1) // 2 if padding is None else padding
    return (hh + 2 * pad - kernel) // spatial_stride + 1, (ww + 2 * pad - kernel) // spatial_stride + 1


def teacher_hw(grid: Sequence[int], patch_size: int = 14) -> tuple[int, int]:
    """Teacher input size (p·h, p·w): its patch grid equals the token grid."""
    return int(grid[0]) * patch_size, int(grid[1]) * patch_size


@dataclasses.dataclass(frozen=True)
class Correspondence:
    """The full latent ↔ view ↔ pixel bookkeeping for one clip shape.

    Attributes:
      num_latent_frames: F' (= number of geometry views N).
      latent_hw: (H', W').
      grid: (h, w) token grid per view.
      teacher_hw: (p·h, p·w) teacher input and dense-output size.
      frames: (N,) video frame index of each view.
    """

    num_latent_frames: int
    latent_hw: tuple[int, int]
    grid: tuple[int, int]
    teacher_hw: tuple[int, int]
    frames: tuple[int, ...]

    @property
    def num_views(self) -> int:
        return self.num_latent_frames

    @property
    def num_frames(self) -> int:
        return self.frames[-1] + 1 if self.frames else 0


def make_correspondence(
    latent_shape: Sequence[int],
    *,
    temporal_stride: int = 4,
    spatial_stride: int = 2,
    patch_size: int = 14,
    rule: str = "last",
    kernel: int | None = None,
    padding: int | None = None,
) -> Correspondence:
    """Correspondence for latents of shape (C, F', H', W') (or (B, C, F', H', W'))."""
    shape = tuple(int(x) for x in latent_shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"latent shape must be (C, F', H', W') or (B, C, F', H', W'), got {shape}")
    f, hh, ww = shape[-3:]
    grid = token_grid((hh, ww), spatial_stride, kernel, padding)
    if min(grid) < 1:
        raise ValueError(f"latent grid {(hh, ww)} is too small for a connector with spatial stride {spatial_stride}")
    frames = view_frame_indices(f, temporal_stride, rule)
    return Correspondence(f, (hh, ww), grid, teacher_hw(grid, patch_size), tuple(int(i) for i in frames))


def select_view_frames(video: jax.Array, frames: Sequence[int]) -> jax.Array:
    """(B, 3, F, H, W) video → (B, N, 3, H, W) frames at the view indices. Raises if the clip is too short."""
    if video.ndim != 5:
        raise ValueError(f"video must be (B, 3, F, H, W), got shape {video.shape}")
    if max(frames) >= video.shape[2]:
        raise ValueError(f"view frame {max(frames)} is beyond the clip's {video.shape[2]} frames")
    picked = jnp.take(video, jnp.asarray(frames, jnp.int32), axis=2)  # (B, 3, N, H, W)
    return jnp.moveaxis(picked, 2, 1)


def teacher_images(video: jax.Array, corr: Correspondence) -> jax.Array:
    """Teacher input from a VAE-range video: (B, 3, F, H, W) in [−1, 1] → (B, N, 3, p·h, p·w) in [0, 1].

    Frames are picked by the view rule and resized (bilinear, antialiased when shrinking) to the teacher size.
    """
    views = select_view_frames(video, corr.frames)
    views = (views.astype(jnp.float32) + 1.0) * 0.5
    b, n, c, _, _ = views.shape
    th, tw = corr.teacher_hw
    if views.shape[-2:] != (th, tw):
        views = jax.image.resize(views, (b, n, c, th, tw), method="bilinear", antialias=True)
    return jnp.clip(views, 0.0, 1.0)


__all__ = [
    "VIEW_FRAME_RULES",
    "Correspondence",
    "latent_frame_span",
    "make_correspondence",
    "num_latent_frames",
    "num_video_frames",
    "select_view_frames",
    "teacher_hw",
    "teacher_images",
    "token_grid",
    "view_frame_indices",
]
