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


def plot_curves(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], path: str, *,
                xlabel: str = "iteration") -> None:
    """Saves one panel per title, each with its named (steps, values) curves; non-finite values are skipped."""
    if not panels:
        raise ValueError("plot_curves: no panels")
    plt = _pyplot()
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, curves) in zip(axes.ravel(), panels.items()):
        for name, (steps, values) in curves.items():
            x, y = np.asarray(steps, np.float64), np.asarray(values, np.float64)
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], "-o" if ok.sum() < 12 else "-", markersize=3, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if len(curves) > 1:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_camera_pairs(before: np.ndarray, after: np.ndarray, path: str, *, titles: Sequence[str] = (),
                      labels: tuple[str, str] = ("before", "after")) -> None:
    """Saves one 3-D panel per clip with two camera paths (centres and viewing directions) overlaid.

    before, after: (B, N, 4, 4) camera-to-world, OpenCV axes (z forward), each path expressed relative to its first
    camera so that the two start at the origin looking down +z.
    """
    b0, b1 = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if b0.ndim != 4 or b0.shape[2:] != (4, 4) or b0.shape != b1.shape:
        raise ValueError(f"plot_camera_pairs: expected two (B, N, 4, 4) pose sets of one shape, got {b0.shape}, "
                         f"{b1.shape}")
    plt = _pyplot()
    n = b0.shape[0]
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(3.4 * cols, 3.4 * rows))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        for poses, label, colour in ((b0[i], labels[0], "tab:blue"), (b1[i], labels[1], "tab:orange")):
            rel = np.linalg.inv(poses[0]) @ poses
            c, fwd = rel[:, :3, 3], rel[:, :3, 2]
            extent = max(float(np.ptp(c, axis=0).max()), 1e-6)
            ax.plot(c[:, 0], c[:, 2], -c[:, 1], "-o", markersize=2, color=colour, label=label)
            ax.quiver(c[:, 0], c[:, 2], -c[:, 1], fwd[:, 0], fwd[:, 2], -fwd[:, 1], length=0.15 * extent,
                      color=colour, alpha=0.5)
        ax.tick_params(labelsize=5)
        if i < len(titles):
            ax.set_title(titles[i][:60], fontsize=6)
        if i == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
