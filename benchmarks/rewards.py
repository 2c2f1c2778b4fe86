#!/usr/bin/env python
"""Reward speed: jitted JAX (vggrpo_jax.rewards) against a straightforward NumPy implementation of the same formulas.

    python benchmarks/rewards.py                     # Any4D output size 21 x 336 x 518 and quarter size 21 x 168 x 259
    python benchmarks/rewards.py --stride 2          # render leave-one-out depth on a 2x coarser grid
    python benchmarks/rewards.py --sizes 84x130 --repeats 5

The scene is a static toyworld clip at that size (exact depth, points and cameras). r_geo runs with default options
(leave-one-out, median-depth normalisation, top-3) on it, so both implementations do the same work; the JAX time
with Any4D-style scene-flow filtering is printed as well (same seed, with moving objects). r_motion runs on a batch
of --motion-batch trajectories of --views poses. Prints seconds per call (median of --repeats; compile time reported separately), the
largest |difference| between the two results (a check that both computed the same thing), and NumPy / JAX (> 1: JAX
faster).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=21)
    p.add_argument("--sizes", default="336x518,168x259", help="comma-separated HxW")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--motion-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=2)
    return p.parse_args()


ARGS = _parse()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vggrpo_jax.data.toyworld import ToyworldConfig, camera_path, clip_geometry, render_clip  # noqa: E402
from vggrpo_jax.rewards import motion_smoothness, reprojection_consistency  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# NumPy reference implementations (written from the formulas, no shared code with the JAX version)


def np_so3_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle of rotations (..., 3, 3) by the textbook arccos formula (fine away from angle pi)."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    th = np.arccos(cos)
    vee = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.sin(th)
    factor = np.where(s > 1e-8, th / (2 * np.where(s > 1e-8, s, 1)), 0.5)
    return factor[..., None] * vee


def np_motion(c2w: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    def jerk(x):
        a = np.linalg.norm(np.diff(x, axis=-2), axis=-1)
        n = np.linalg.norm(x, axis=-1)
        return np.mean(a / (n[..., 1:] + n[..., :-1] + eps), -1)

    c = c2w[..., :3, 3]
    R = c2w[..., :3, :3]
    w = np_so3_log(R[..., 1:, :, :] @ np.swapaxes(R[..., :-1, :, :], -1, -2))
    e_t, e_r = jerk(np.diff(c, axis=-2)), jerk(w)
    return 0.5 * (1 / (1 + e_t) + 1 / (1 + e_r))


def np_reprojection(c2w, K, depth, points, top_k=3, stride=1):
    N, H, W = depth.shape
    h, w = H // stride, W // stride
    o = stride // 2
    d = depth[:, o::stride, o::stride][:, :h, :w]
    p = points[:, o::stride, o::stride][:, :h, :w]
    keep = np.isfinite(d) & (d > 1e-6)
    pts = p.reshape(N, -1, 3)
    errs = np.zeros(N)
    for i in range(N):
        others = np.concatenate([pts[j][keep[j].reshape(-1)] for j in range(N) if j != i])
        R, t = c2w[i, :3, :3], c2w[i, :3, 3]
        pc = (others - t) @ R  # R^T (p - t)
        z = pc[:, 2]
        front = z > 1e-6
        pc, z = pc[front], z[front]
        x = (K[i, 0, 0] * pc[:, 0] / z + K[i, 0, 2]) / stride
        y = (K[i, 1, 1] * pc[:, 1] / z + K[i, 1, 2]) / stride
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        idx = np.floor(y[inside]).astype(np.int64) * w + np.floor(x[inside]).astype(np.int64)
        buf = np.full(h * w, np.inf)
        np.minimum.at(buf, idx, z[inside])
        buf = buf.reshape(h, w)
        om = np.isfinite(buf) & keep[i]
        errs[i] = np.abs(buf - d[i])[om].mean() if om.any() else np.inf
    errs = errs / np.median(d[keep])
    return -np.sort(errs)[-top_k:].mean(), errs


# ----------------------------------------------------------------------------------------------------------------


def _time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _jax_timed(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    run = lambda: jax.block_until_ready(compiled(*args))
    run()  # warm-up
    s, out = _time(run, ARGS.repeats)
    return compile_s, s, out


def main() -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPU threads visible); "
          f"r_geo stride {ARGS.stride}, top_k {ARGS.top_k}; median of {ARGS.repeats} runs")
    print(f"{'case':<34}{'compile s':>10}{'JAX s':>10}{'NumPy s':>10}{'NumPy/JAX':>11}{'max|diff|':>11}")
    row = lambda name, c, j, n, d: print(f"{name:<34}{c:>10.2f}{j:>10.4f}{n:>10.4f}{n / j:>11.1f}{d:>11.2e}")

    # r_motion on a batch of jittered orbits (the GRPO group), 21 poses each.
    keys = jax.random.split(jax.random.key(0), ARGS.motion_batch)
    c2w = jax.jit(jax.vmap(lambda k: camera_path(k, 0, ARGS.views, 0.01)))(keys)
    comp, js, out = _jax_timed(lambda c: motion_smoothness(c).reward, c2w)
    c_np = np.asarray(c2w, np.float64)
    ns, ref = _time(lambda: np_motion(c_np), ARGS.repeats)
    row(f"r_motion {ARGS.motion_batch}x{ARGS.views} poses", comp, js, ns, float(np.max(np.abs(np.asarray(out) - ref))))

    for size in ARGS.sizes.split(","):
        H, W = (int(v) for v in size.split("x"))
        t = time.perf_counter()
        cfg = ToyworldConfig(num_frames=ARGS.views, height=H, width=W, dynamic_prob=0.0)
        clip = render_clip(ARGS.seed, config=cfg)
        render_s = time.perf_counter() - t
        moving = render_clip(ARGS.seed, config=dataclasses.replace(cfg, dynamic_prob=1.0, speed_range=(0.05, 0.1)))
        static = clip_geometry(clip, "none")
        comp, js, out = _jax_timed(
            lambda g: reprojection_consistency(g, top_k=ARGS.top_k, stride=ARGS.stride), static)
        args = [np.asarray(clip[k], np.float64) for k in ("c2w", "intrinsics", "depth", "points")]
        ns, (ref_r, ref_e) = _time(lambda: np_reprojection(*args, top_k=ARGS.top_k, stride=ARGS.stride), ARGS.repeats)
        diff = float(np.max(np.abs(np.asarray(out.per_view_error) - ref_e)))
        row(f"r_geo {ARGS.views}x{H}x{W}", comp, js, ns, diff)
        dyn = clip_geometry(moving, "any4d")
        comp_d, js_d, _ = _jax_timed(lambda g: reprojection_consistency(g, top_k=ARGS.top_k, stride=ARGS.stride), dyn)
        print(f"{'  + Any4D scene-flow filter (JAX)':<34}{comp_d:>10.2f}{js_d:>10.4f}{'':>10}{'':>11}{'':>11}")
        print(f"  (toyworld render of the clip incl. compile: {render_s:.1f} s; reward {float(out.reward):.4f} "
              f"vs NumPy {ref_r:.4f})")


if __name__ == "__main__":
    main()
