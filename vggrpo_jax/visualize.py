"""Pictures for humans: camera trajectories of generated videos (PNG)."""

from __future__ import annotations

import numpy as np


def plot_camera_trajectory(c2w: np.ndarray, path: str, title: str = "", axis_len: float | None = None) -> None:
    """Saves a 3-D plot of camera centres and viewing directions.

    c2w: (N, 4, 4) camera-to-world, OpenCV axes (z forward); view 0 is drawn in green, the last in red.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
