"""The pixel-space motion-smoothness score used at evaluation (no geometry model involved)."""

import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.evaluation import frame_smoothness


def _video(offsets):
    """(1, 3, F, 8, 8): a horizontal ramp whose brightness shifts by `offsets[t]` at frame t."""
    ramp = np.linspace(-0.5, 0.5, 8, dtype=np.float32)[None, :].repeat(8, 0)
    frames = np.stack([ramp + o for o in offsets])  # (F, 8, 8)
    return jnp.asarray(np.broadcast_to(frames[None, None], (1, 3) + frames.shape))


def test_constant_rate_change_and_stillness_score_one():
    assert float(frame_smoothness(_video(np.linspace(0, 0.4, 9)))[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(frame_smoothness(_video(np.zeros(9)))[0]) == pytest.approx(1.0, abs=1e-6)


def test_jerk_lowers_the_score_monotonically():
    base = np.linspace(0, 0.4, 9)
    scores = []
    for amp in (0.0, 0.02, 0.05, 0.1):
        jitter = amp * np.array([0, 1, -1, 1, -1, 1, -1, 1, 0])
        scores.append(float(frame_smoothness(_video(base + jitter))[0]))
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_too_few_frames_is_an_error():
    with pytest.raises(ValueError, match="F ≥ 3"):
        frame_smoothness(_video([0.0, 0.1]))
