"""Epi., the VBench-style flow proxies and the frame conversion, on toyworld clips and synthetic videos with known
answers: a static scene under a smooth orbit against the same scene with camera shake or non-rigidly warped frames.

Figures measured when these tests were written (128² toyworld orbits, 17 frames, static scenes, 1.0-unit checkers,
seeds 0–3): Epi. Sampson 2.26 / 3.68 / 2.18 / 3.41 px smooth → 4.99 / 5.00 / 3.44 / 4.58 px with a 4-px wobble
(inlier rate 0.849 / 0.746 / 0.848 / 0.814 → 0.734 / 0.697 / 0.774 / 0.794); motion smoothness 0.986 / 0.985 /
0.986 / 0.986 smooth, 0.955 / 0.963 / 0.957 / 0.956 with jitter 0.01, 0.981 / 0.980 / 0.982 / 0.981 with one warped
frame. Reprint them with `PYTHONPATH=. python tests/test_evaluation_metrics_video.py`.
"""

import cv2
import numpy as np
import pytest

from vggrpo_jax.data.toyworld import render_clip
from vggrpo_jax.evaluation.epipolar import EpipolarConfig, epipolar_metrics, frame_pairs, sampson_distance
from vggrpo_jax.evaluation.flow import flow_metrics, video_dynamic_degree, video_motion_smoothness
from vggrpo_jax.evaluation.frames import to_uint8_frames
from vggrpo_jax.evaluation.scores import make_records, video_scores

SEEDS = (0, 1, 2, 3)
_KW = dict(num_frames=17, height=128, width=128, camera_motions=("orbit",), dynamic_prob=0.0, checker_size=1.0)


def _api(frames01: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) in [0, 1] → (1, 3, F, H, W) in [−1, 1]."""
    return (np.moveaxis(frames01, -1, 0)[None] * 2.0 - 1.0).astype(np.float32)


def _wobble(frame: np.ndarray, amp: float, phase: float) -> np.ndarray:
    """A smooth non-rigid warp (one sine period across the frame, `amp` px): no camera produces it."""
    h, w = frame.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + amp * np.sin(2 * np.pi * gy / h + phase)
    my = gy + amp * np.sin(2 * np.pi * gx / w + phase)
    return cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def clips():
    out = {}
    for s in SEEDS:
        smooth = render_clip(s, **_KW)["video"]
        out[s] = {
            "smooth": smooth,
            "jitter": render_clip(s, jitter=0.01, **_KW)["video"],
            "wobble": np.stack([_wobble(f, 4.0, 1.3 * k) for k, f in enumerate(smooth)]),
        }
    return out


# ------------------------------------------------------------------------------------------------ conversion


def test_uint8_conversion_maps_the_range_and_layout():
    v = np.zeros((2, 3, 4, 5, 6), np.float32)
    v[0, 0, 1, 2, 3], v[0, 1, 1, 2, 3], v[0, 2, 1, 2, 3] = -1.0, 1.0, 1.5  # 1.5: an overshoot saturates
    u = to_uint8_frames(v)
    assert u.shape == (2, 4, 5, 6, 3) and u.dtype == np.uint8
    assert tuple(u[0, 1, 2, 3]) == (0, 255, 255) and u[1, 0, 0, 0, 0] == 128  # 0 ↦ round(127.5) = 128
    with pytest.raises(ValueError, match="non-finite"):
        to_uint8_frames(np.full((1, 3, 2, 4, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="B, C"):
        to_uint8_frames(np.zeros((3, 2, 4, 4), np.float32))


# ------------------------------------------------------------------------------------------------ Epi.


def _two_view(rng, n=50):
    """Exact correspondences of random 3D points in two pinhole views, and the true F (x₂ᵀFx₁ = 0)."""
    K = np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]])
    ang = 0.2
    R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
    t = np.array([0.5, 0.1, 0.05])
    X = rng.uniform([-1, -1, 3], [1, 1, 6], size=(n, 3))
    proj = lambda P: (P @ K.T)[:, :2] / (P @ K.T)[:, 2:]  # noqa: E731
    x1, x2 = proj(X), proj(X @ R.T + t)
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Kinv = np.linalg.inv(K)
    return Kinv.T @ tx @ R @ Kinv, x1, x2


def test_sampson_distance_is_zero_on_exact_matches_and_grows_with_the_offset():
    F, x1, x2 = _two_view(np.random.default_rng(0))
    assert np.max(sampson_distance(F, x1, x2)) < 1e-8
    np.testing.assert_allclose(sampson_distance(7.0 * F, x1, x2), sampson_distance(F, x1, x2), atol=1e-12)
    # Moving x₂ off its epipolar line by d px: the Sampson distance is positive, at most d, and grows with d.
    line = x1 @ F[:, :2].T + F[:, 2]  # rows (a, b, c) of l₂ = F x₁ (first two columns act on x₁'s pixels)
    normal = line[:, :2] / np.linalg.norm(line[:, :2], axis=1, keepdims=True)
    d1 = sampson_distance(F, x1, x2 + 1.0 * normal)
    d3 = sampson_distance(F, x1, x2 + 3.0 * normal)
    assert np.all(d1 > 0.3) and np.all(d1 <= 1.0 + 1e-9) and np.all(d3 > 2.5 * d1)


def test_frame_pairs_follow_the_stride():
    assert frame_pairs(17, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert frame_pairs(17, 1)[:2] == [(0, 1), (1, 2)] and len(frame_pairs(17, 1)) == 16
    assert frame_pairs(49, 15) == [(0, 15), (15, 30), (30, 45)]  # Epipolar-DPO's sampling of a 49-frame video


def test_epi_smooth_static_scene_beats_the_non_rigidly_warped_one(clips):
    cfg = EpipolarConfig()
    smooth = [epipolar_metrics(_api(clips[s]["smooth"]), cfg) for s in SEEDS]
    wobble = [epipolar_metrics(_api(clips[s]["wobble"]), cfg) for s in SEEDS]
    for s, a, b in zip(SEEDS, smooth, wobble):
        assert a["failed"][0] == 0 and a["scored_pairs"][0] >= 3, (s, a)
        assert b["sampson"][0] > a["sampson"][0] + 0.5, (s, a["sampson"], b["sampson"])  # ≥ 0.5 px worse, each clip
    inl_a = np.mean([a["inlier_rate"][0] for a in smooth])
    inl_b = np.mean([b["inlier_rate"][0] for b in wobble])
    assert inl_b < inl_a - 0.04, (inl_a, inl_b)


def test_epi_is_deterministic_and_fails_cleanly_without_texture(clips):
    v = _api(clips[0]["smooth"])
    a, b = epipolar_metrics(v), epipolar_metrics(v)
    assert a["sampson"][0] == b["sampson"][0] and a["inlier_rate"][0] == b["inlier_rate"][0]
    flat = np.zeros((2, 3, 9, 64, 64), np.float32)  # no keypoints at all: every pair fails, the video too
    r = epipolar_metrics(flat)
    assert np.all(r["failed"] == 1) and np.all(np.isnan(r["sampson"])) and np.all(r["scored_pairs"] == 0)
    with pytest.raises(ValueError, match="stride"):
        epipolar_metrics(flat[:, :, :3], EpipolarConfig(stride=4))
    with pytest.raises(ValueError, match="min_matches"):
        EpipolarConfig(min_matches=5)


# ------------------------------------------------------------------------------------------------ flow proxies


def test_motion_smoothness_ranks_smooth_above_jitter_and_a_warped_frame(clips):
    for s in SEEDS:
        u = {k: (v * 255).round().astype(np.uint8) for k, v in clips[s].items()}
        smooth = video_motion_smoothness(u["smooth"])
        jitter = video_motion_smoothness(u["jitter"])
        warped = u["smooth"].copy()
        warped[9] = _wobble(warped[9], 3.0, 0.0)  # one odd (interpolated) frame warped
        one_warp = video_motion_smoothness(warped)
        assert 0.95 < smooth <= 1.0, (s, smooth)
        assert jitter < smooth - 0.02, (s, smooth, jitter)
        assert one_warp < smooth - 0.003, (s, smooth, one_warp)
    frozen = np.repeat((clips[0]["smooth"][:1] * 255).round().astype(np.uint8), 9, axis=0)
    assert video_motion_smoothness(frozen) == pytest.approx(1.0, abs=1e-6)  # a still video is perfectly predictable


def _texture(size=320, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 3.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img.astype(np.uint8)[..., None], 3, axis=-1)


def _panning(shift_px: float, frames: int, size=256):
    """A textured plane translating `shift_px` pixels per frame, cropped to size² (no border effects)."""
    tex = _texture(size + 64 + int(abs(shift_px) * frames))
    out = []
    for k in range(frames):
        M = np.float32([[1, 0, -shift_px * k], [0, 1, 0]])
        out.append(cv2.warpAffine(tex, M, tex.shape[1::-1], flags=cv2.INTER_LINEAR)[32:32 + size, 32:32 + size])
    return np.stack(out)


def test_dynamic_degree_follows_vbench_thresholds_on_known_motion():
    # 256² at 8 fps: VBench's threshold is 6 px per sampled pair; count_num = round(4·9/16) = 2 of 8 pairs.
    slow = video_dynamic_degree(_panning(3.0, 9), fps=8)
    fast = video_dynamic_degree(_panning(9.0, 9), fps=8)
    assert slow["threshold"] == pytest.approx(6.0)
    assert slow["flow_magnitude"] == pytest.approx(3.0, abs=0.6) and slow["dynamic"] == 0.0
    assert fast["flow_magnitude"] == pytest.approx(9.0, abs=1.5) and fast["dynamic"] == 1.0
    # At 16 fps every 2nd frame is kept (≈ 8 fps), so 4.5 px per frame is 9 px per sampled pair.
    at16 = video_dynamic_degree(_panning(4.5, 17), fps=16)
    assert at16["flow_magnitude"] == pytest.approx(9.0, abs=1.5) and at16["dynamic"] == 1.0


def test_dynamic_degree_on_toyworld(clips):
    still = np.repeat((clips[0]["smooth"][:1] * 255).round().astype(np.uint8), 17, axis=0)
    r = flow_metrics(np.stack([_api(clips[0]["smooth"])[0], _api(still / 255.0)[0]]), fps=8)
    assert r["dynamic_degree"].tolist() == [1.0, 0.0]
    assert r["flow_magnitude"][1] < 0.2 < 1.0 < r["flow_magnitude"][0]  # threshold here: 3 px


def test_video_scores_and_records():
    rng = np.random.default_rng(0)
    v = np.clip(rng.normal(0, 0.3, (2, 3, 9, 32, 32)), -1, 1).astype(np.float32)
    scores = video_scores(v, fps=8)
    assert set(scores) == {"epi_sampson", "epi_inlier_rate", "epi_failed", "motion_smoothness", "dynamic_degree",
                           "flow_magnitude"}
    recs = make_records(["a", "b"], [0, 1], ["static", "dynamic"], scores)
    assert recs[1]["prompt"] == "b" and recs[1]["split"] == "dynamic" and set(scores) <= set(recs[1])
    with pytest.raises(ValueError, match="shape"):
        make_records(["a"], [0], ["static"], scores)


if __name__ == "__main__":  # the figures of the module docstring
    for s in SEEDS:
        sm, ji = render_clip(s, **_KW)["video"], render_clip(s, jitter=0.01, **_KW)["video"]
        wo = np.stack([_wobble(f, 4.0, 1.3 * k) for k, f in enumerate(sm)])
        a, b = epipolar_metrics(_api(sm)), epipolar_metrics(_api(wo))
        u8 = lambda v: (v * 255).round().astype(np.uint8)  # noqa: E731
        one = u8(sm)
        one[9] = _wobble(one[9], 3.0, 0.0)
        print(f"seed {s}: Epi. Sampson {a['sampson'][0]:.2f} → {b['sampson'][0]:.2f} px, inlier rate "
              f"{a['inlier_rate'][0]:.3f} → {b['inlier_rate'][0]:.3f}; motion smoothness smooth "
              f"{video_motion_smoothness(u8(sm)):.4f}, jitter {video_motion_smoothness(u8(ji)):.4f}, "
              f"one warped frame {video_motion_smoothness(one):.4f}")
