"""VBench-style motion smoothness and dynamic degree from classical optical flow (OpenCV Farnebäck).

Both are PROXIES for VBench's learned-model metrics, with VBench's protocol and constants but a classical flow:

motion smoothness (VBench: AMT frame interpolation)
    Keep the even frames, interpolate each odd frame 2k+1 from frames 2k and 2k+2, and compare it with the real
    one: score = (255 − mean |interpolated − real|) / 255 over uint8 RGB pixels of all odd frames (VBench's
    normalisation). VBench interpolates with the AMT network; here the midpoint is warped from both neighbours with
    the intermediate-flow approximation of Super SloMo at t = ½, F_{½→0} = ¼(F_{2→0} − F_{0→2}) and
    F_{½→2} = −F_{½→0}, from Farnebäck flows F_{0→2}, F_{2→0}, and the two warps averaged. Motion that a smooth
    flow explains (a steady camera) interpolates well; shake, stutter and a warped frame do not.

dynamic degree (VBench: RAFT flow)
    Frames are subsampled to about 8 fps (every round(fps/8)-th frame); for each consecutive pair the mean of the
    largest 5% flow magnitudes is the pair's motion; a pair moves if that exceeds
    thres = max(1, 8/fps)·6·min(H, W)/256 pixels, and the video is dynamic if at least round(4·n/16) of the
    pairs move (n = the number of subsampled frames). VBench uses RAFT (20 iterations); here Farnebäck.
    `flow_magnitude` (the mean over pairs of the top-5% magnitude, in pixels) is reported beside the boolean.
    Dynamic degree describes a video, it does not rank it: a report shows it, win rates skip it.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vggrpo_jax.evaluation.frames import gray, to_uint8_frames


@dataclasses.dataclass(frozen=True)
class FarnebackConfig:
    """cv2.calcOpticalFlowFarneback's parameters (OpenCV's documented defaults for video, 3 pyramid levels)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


def optical_flow(a: np.ndarray, b: np.ndarray, config: FarnebackConfig = FarnebackConfig()) -> np.ndarray:
    """uint8 frames a, b (H, W, C) → flow (H, W, 2) float32 with a(y, x) ≈ b(y + flow[..., 1], x + flow[..., 0])."""
    c = config
    return cv2.calcOpticalFlowFarneback(gray(a), gray(b), None, c.pyr_scale, c.levels, c.winsize, c.iterations,
                                        c.poly_n, c.poly_sigma, 0)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(y, x) = image(y + flow_y, x + flow_x), bilinear, borders replicated. float32 out."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(image.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def interpolate_midpoint(a: np.ndarray, b: np.ndarray, config: FarnebackConfig = FarnebackConfig()) -> np.ndarray:
    """uint8 frames a, b (H, W, C) → the frame halfway between them, float32 in [0, 255] (see the module doc)."""
    f_ab, f_ba = optical_flow(a, b, config), optical_flow(b, a, config)
    to_a = 0.25 * (f_ba - f_ab)
    return 0.5 * (_warp(a, to_a) + _warp(b, -to_a))


def video_motion_smoothness(frames: np.ndarray, config: FarnebackConfig = FarnebackConfig()) -> float:
    """uint8 frames (F ≥ 3, H, W, C) → VBench-style motion smoothness in [0, 1] (1: every odd frame predicted)."""
    if len(frames) < 3:
        raise ValueError(f"motion smoothness needs at least 3 frames, got {len(frames)}")
    errs = [np.mean(np.abs(interpolate_midpoint(frames[i - 1], frames[i + 1], config) - frames[i].astype(np.float32)))
            for i in range(1, len(frames) - 1, 2)]
    return float((255.0 - np.mean(errs)) / 255.0)


def _top_fraction_mean(flow: np.ndarray, fraction: float = 0.05) -> float:
    mag = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    k = max(1, int(mag.size * fraction))
    return float(np.mean(np.partition(mag, mag.size - k)[-k:]))


def video_dynamic_degree(frames: np.ndarray, fps: float,
                         config: FarnebackConfig = FarnebackConfig()) -> dict[str, float]:
    """uint8 frames (F, H, W, C) at `fps` → {dynamic (0/1), flow_magnitude (px), moving_pairs, threshold}."""
    if not fps > 0:
        raise ValueError(f"dynamic degree needs fps > 0, got {fps}")
    sub = frames[:: max(1, round(fps / 8.0))]
    if len(sub) < 2:
        raise ValueError(f"dynamic degree needs ≥ 2 frames after subsampling to ~8 fps, got {len(sub)} of "
                         f"{len(frames)} at fps={fps}")
    thres = max(1.0, 8.0 / fps) * 6.0 * min(frames.shape[1:3]) / 256.0
    need = round(4 * len(sub) / 16.0)
    motion = [_top_fraction_mean(optical_flow(a, b, config)) for a, b in zip(sub[:-1], sub[1:])]
    moving = int(np.sum(np.asarray(motion) > thres))
    return {"dynamic": float(moving >= need), "flow_magnitude": float(np.mean(motion)),
            "moving_pairs": float(moving), "threshold": float(thres)}


def flow_metrics(video: np.ndarray, fps: float, config: FarnebackConfig = FarnebackConfig()) -> dict[str, np.ndarray]:
    """video (B, C, F, H, W) in [−1, 1] → {motion_smoothness, dynamic_degree, flow_magnitude} each (B,) float64."""
    frames = to_uint8_frames(video)
    smooth = [video_motion_smoothness(f, config) for f in frames]
    dyn = [video_dynamic_degree(f, fps, config) for f in frames]
    return {
        "motion_smoothness": np.asarray(smooth, np.float64),
        "dynamic_degree": np.asarray([d["dynamic"] for d in dyn], np.float64),
        "flow_magnitude": np.asarray([d["flow_magnitude"] for d in dyn], np.float64),
    }


__all__ = ["FarnebackConfig", "flow_metrics", "interpolate_midpoint", "optical_flow", "video_dynamic_degree",
           "video_motion_smoothness"]
