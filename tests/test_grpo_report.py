"""The run report's pieces that decide something: the manifold checks (reward hacking) and the curve panels."""

import numpy as np
import pytest

from vggrpo_jax.grpo.report import MANIFOLD_MARGINS, manifold_checks, manifold_scores, reward_curve_panels


def _videos(seed=0, n=6):
    """Moving stripes (n, 3, 9, 16, 16) in [−1, 1]: a smooth toy 'world' with colour and motion."""
    rng = np.random.default_rng(seed)
    t = np.arange(9)[None, None, :, None, None]
    x = np.arange(16)[None, None, None, None, :]
    phase = rng.uniform(0, 6, (n, 1, 1, 1, 1))
    colour = rng.uniform(0.3, 0.8, (n, 3, 1, 1, 1))
    return colour * np.sin(0.7 * x + 0.5 * t + phase) + 0 * np.arange(16)[None, None, None, :, None]


def _checks(trained, base=None):
    base = _videos() if base is None else base
    s_base, s_trained = manifold_scores(base), manifold_scores(trained)
    s_base["vae_roundtrip_psnr"] = np.full(len(base), 30.0)
    s_trained["vae_roundtrip_psnr"] = np.full(len(trained), 30.0)
    return manifold_checks(s_base, s_trained)


def test_a_policy_close_to_the_base_passes_every_check():
    near = _videos() + 0.02 * np.random.default_rng(1).standard_normal(_videos().shape)  # same prompts and noise
    checks = _checks(near)
    assert set(checks) == set(MANIFOLD_MARGINS) and all(c["ok"] for c in checks.values()), checks


@pytest.mark.parametrize("hack, failed", [
    (lambda v: 0.4 * v, "colour_std"),  # washed out
    (lambda v: np.clip(v + 0.3, -1, 1), "colour_mean"),  # brightened
    (lambda v: np.repeat(v[:, :, :1], v.shape[2], axis=2), "frame_difference"),  # a frozen camera: no motion at all
    (lambda v: 0.7 * v + 0.3 * v.mean(axis=1, keepdims=True), "saturation"),  # objects fading into grey
])
def test_each_hack_fails_its_check(hack, failed):
    checks = _checks(hack(_videos()))
    assert not checks[failed]["ok"], checks[failed]


def test_a_vae_that_cannot_reproduce_the_samples_fails():
    base = _videos()
    s_base, s_trained = manifold_scores(base), manifold_scores(base)
    s_base["vae_roundtrip_psnr"], s_trained["vae_roundtrip_psnr"] = np.full(6, 31.0), np.full(6, 27.5)
    assert not manifold_checks(s_base, s_trained)["vae_roundtrip_psnr"]["ok"]


def test_curve_panels_keep_only_logged_keys():
    rows = [{"step": 1, "reward/motion_mean": 0.5, "train/kl": 0.0},
            {"step": 2, "reward/motion_mean": 0.6, "train/kl": 0.01, "eval/latent_motion": 0.55}]
    panels = reward_curve_panels(rows)
    assert set(panels) == {"r_motion ↑", "KL to the base"}
    assert panels["r_motion ↑"] == {"train (LGM)": ([1, 2], [0.5, 0.6]), "held-out LGM": ([2], [0.55])}
