"""Pictures for humans (PNG): camera trajectories, score histograms and frame grids of generated videos."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_camera_trajectory(c2w: np.ndarray, path: str, title: str = "", axis_len: float | None = None) -> None:
    """Saves a 3-D plot of camera centres and viewing directions.

    c2w: (N, 4, 4) camera-to-world, OpenCV axes (z forward); view 0 is drawn in green, the last in red.
    """
    plt = _pyplot()
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"plot_camera_trajectory: expected (N, 4, 4) poses, got {c2w.shape}")
    centres = c2w[:, :3, 3]
    forward = c2w[:, :3, 2]
    extent = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 1.0
    axis_len = axis_len or 0.15 * max(extent, 1e-6)
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    # Plot in a y-up view (OpenCV y points down), so that the ground is at the bottom of the picture.
    xs, ys, zs = centres[:, 0], centres[:, 2], -centres[:, 1]
    ax.plot(xs, ys, zs, "-o", markersize=2, color="tab:blue")
    ax.quiver(xs, ys, zs, forward[:, 0], forward[:, 2], -forward[:, 1], length=axis_len, color="tab:gray")
    ax.scatter(xs[:1], ys[:1], zs[:1], color="tab:green", s=30, label="first")
    ax.scatter(xs[-1:], ys[-1:], zs[-1:], color="tab:red", s=30, label="last")
    ax.set_xlabel("x")
    ax.set_ylabel("z (forward)")
    ax.set_zlabel("up (−y)")
    ax.legend(loc="upper left")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histograms(values: Mapping[str, np.ndarray], path: str, *, xlabel: str = "", title: str = "",
                    vline: float | None = None, bins: int = 30) -> None:
    """Saves overlaid histograms of 1-D value sets (name → (N,)) on shared bins, with an optional vertical line."""
    plt = _pyplot()
    arrays = {k: np.asarray(v, np.float64).ravel() for k, v in values.items()}
    if not arrays or any(a.size == 0 for a in arrays.values()):
        raise ValueError(f"plot_histograms: every set needs values, got sizes { {k: a.size for k, a in arrays.items()} }")
    lo = min(float(a.min()) for a in arrays.values())
    hi = max(float(a.max()) for a in arrays.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, a in arrays.items():
        ax.hist(a, bins=edges, alpha=0.45, label=name)
    if vline is not None:
        ax.axvline(vline, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_frame_grid(videos: np.ndarray, path: str, *, max_frames: int = 9,
                    row_titles: Sequence[str] | None = None) -> None:
    """Saves one row per video of evenly spaced frames. videos (B, 3, F, H, W) in [−1, 1]."""
    v = np.asarray(videos, np.float32)
    if v.ndim != 5 or v.shape[1] != 3:
        raise ValueError(f"save_frame_grid: expected videos (B, 3, F, H, W), got {v.shape}")
    b, _, f, _, _ = v.shape
    cols = np.unique(np.linspace(0, f - 1, min(max_frames, f)).round().astype(int))
    plt = _pyplot()
    fig, axes = plt.subplots(b, len(cols), figsize=(1.1 * len(cols), 1.25 * b), squeeze=False)
    for i in range(b):
        for j, t in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(np.clip((v[i, :, t].transpose(1, 2, 0) + 1) / 2, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={t}", fontsize=7)
        if row_titles is not None and i < len(row_titles):
            axes[i, 0].set_ylabel(row_titles[i], fontsize=4, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
