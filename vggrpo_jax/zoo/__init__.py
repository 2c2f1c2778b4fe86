"""The toy world's shipped models.

``VIDEO`` is the clip shape (frames, height, width) every toy-world model is trained on: the one place it is set.
17 frames (Wan: F = 1 + 4k, so 5 latent frames and ≥ 5 views for the geometry path) of 64 × 64 pixels (8 × 8 Wan
latents).
"""

from __future__ import annotations

VIDEO: tuple[int, int, int] = (17, 64, 64)
