"""Video I/O: write → read round trips within codec tolerance, fitting to the VAE's shapes, and clear errors.

Tolerances (mean-abs on [-1, 1], smooth synthetic content): png frames ≤ 1/255 (8-bit), mp4 (libx264, quality 8,
yuv420p) ≤ 0.03, gif (256-colour palette) ≤ 0.05.
"""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest

from vggrpo_jax.data.video import VideoError, fit_video, load_videos, read_video, write_video


def _video(frames=9, h=32, w=48) -> np.ndarray:
    """Smooth colour ramps with a moving blob: (3, F, H, W) in [-1, 1]."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(h)[None, :, None] / h
    x = np.arange(w)[None, None, :] / w
    blob = np.exp(-(((x - 0.2 - 0.6 * t / frames) ** 2 + (y - 0.5) ** 2) / 0.02))
    r = 0.8 * (2 * x - 1) + 0 * t
    g = 0.8 * (2 * y - 1) + 0 * t
    b = 1.6 * blob - 0.8
    return np.stack(np.broadcast_arrays(r, g, b)).astype(np.float32)


@pytest.mark.parametrize("ext,tol", [(".mp4", 0.03), (".gif", 0.05)])
def test_write_read_round_trip(tmp_path, ext, tol):
    video = _video()
    path = str(tmp_path / f"clip{ext}")
    write_video(path, video, fps=8)
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == np.float32
    assert back.min() >= -1.0 and back.max() <= 1.0
    err = np.abs(back - video).mean()
    assert err <= tol, f"{ext}: mean-abs error {err:.4f} > {tol}"
    # frames stay in order: the blob moves right
    profile = back[2].mean(axis=1) + 1  # (F, W) blue-channel mass per column
    centre = (np.arange(profile.shape[-1]) * profile).sum(-1) / profile.sum(-1)
    assert np.all(np.diff(centre) > 0)


def test_frame_folder(tmp_path):
    video = _video(frames=5)
    u8 = np.round((video + 1) * 127.5).astype(np.uint8).transpose(1, 2, 3, 0)
    for i, frame in enumerate(u8):
        iio.imwrite(str(tmp_path / f"{i:04d}.png"), frame)
    back = read_video(str(tmp_path))
    assert back.shape == video.shape
    assert np.abs(back - video).max() <= 1.0 / 127.5 + 1e-6


def test_fit_video_shapes_and_centre():
    video = _video(frames=12, h=40, w=70)
    out = fit_video(video, 9, 32, 48, stride=16)
    assert out.shape == (3, 9, 32, 48)
    # central frames kept: frame 0 of the output is frame 1 of the input (12 - 9 = 3, start 1); a uniform
    # vertical resize of the green ramp keeps its mean, and the crop is centred
    np.testing.assert_allclose(out[1].mean(), video[1].mean(), atol=0.05)
    assert fit_video(video, None, 40, 64).shape == (3, 9, 40, 64)  # largest 1 + 4k ≤ 12
    const = np.full((3, 5, 20, 30), 0.25, np.float32)
    np.testing.assert_allclose(fit_video(const, 5, 16, 16), 0.25, atol=1e-6)


def test_fit_video_errors():
    video = _video(frames=7)
    with pytest.raises(VideoError, match="7 frames, 9 are needed"):
        fit_video(video, 9, 32, 48)
    with pytest.raises(VideoError, match="1 \\+ 4k"):
        fit_video(video, 6, 32, 48)
    with pytest.raises(VideoError, match="multiple of the VAE stride 16"):
        fit_video(video, 5, 40, 48, stride=16)


def test_bad_files(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoError, match="broken.mp4"):
        read_video(str(bad))
    with pytest.raises(FileNotFoundError):
        read_video(str(tmp_path / "missing.mp4"))
    empty = tmp_path / "frames"
    os.makedirs(empty)
    with pytest.raises(VideoError, match="no image frames"):
        read_video(str(empty))
    with pytest.raises(VideoError, match="even"):
        write_video(str(tmp_path / "odd.mp4"), _video(h=31), fps=8)
    with pytest.raises(VideoError, match="unsupported"):
        write_video(str(tmp_path / "clip.avi2"), _video(), fps=8)


def test_load_videos_batch(tmp_path):
    a, b = str(tmp_path / "a.mp4"), str(tmp_path / "b.gif")
    write_video(a, _video(frames=9), fps=8)
    write_video(b, _video(frames=11, h=40, w=40), fps=8)
    batch = load_videos([a, b], 9, 32, 32, stride=16)
    assert batch.shape == (2, 3, 9, 32, 32)
