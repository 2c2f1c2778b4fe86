"""Video arrays at the API boundary → the uint8 frames the classical (OpenCV) metrics read."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8_frames(video: np.ndarray) -> np.ndarray:
    """video (B, C, F, H, W) in [−1, 1], C ∈ {1, 3} → uint8 (B, F, H, W, C) in [0, 255].

    x ↦ round((x + 1)·127.5), clipped: decoded videos overshoot [−1, 1] slightly and those pixels saturate, as they
    would when the video is written to a file. Non-finite values are an error (a diverged decoder must not score).
    """
    v = np.asarray(video)
    if v.ndim != 5 or v.shape[1] not in (1, 3):
        raise ValueError(f"expected a video (B, C ∈ {{1, 3}}, F, H, W) in [−1, 1], got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"expected a floating-point video in [−1, 1], got dtype {v.dtype}")
    if not np.all(np.isfinite(v)):
        raise ValueError("video contains non-finite values")
    u8 = np.clip(np.rint((v.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(u8, 1, -1))  # (B, F, H, W, C)


def gray(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) → (H, W) luma (OpenCV's RGB→gray weights for C = 3)."""
    return frame[..., 0] if frame.shape[-1] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
