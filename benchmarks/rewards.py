#!/usr/bin/env python
"""Reward speed: jitted JAX (vggrpo_jax.rewards) against a straightforward NumPy implementation of the same formulas.

    python benchmarks/rewards.py                     # Any4D output size 21 x 336 x 518 and quarter size 21 x 168 x 259
    python benchmarks/rewards.py --stride 2          # render leave-one-out depth on a 2x coarser grid
    python benchmarks/rewards.py --sizes 84x130 --rounds 3 --no-aot

The scene is a static toyworld clip at that size (exact depth, points and cameras). r_geo runs with default options
(leave-one-out, median-depth normalisation, top-3) on it with each z-buffer path (--zbuffers: "scatter" = scatter-min,
"sort" = sort + binary search, no scatter), so all implementations do the same work; the JAX time with Any4D-style
scene-flow filtering is printed as well for the first path (same seed, with moving objects). r_motion runs on a batch of --motion-batch
trajectories of --views poses.

Timing: the machine may be shared, so every implementation runs once per round, rounds interleaved (NumPy, then each
JAX path), and the BEST of --rounds rounds is reported (the median too); compile time separately. Printed: seconds
per call, the largest |difference| from NumPy's per-view errors (a check that both computed the same thing), NumPy /
JAX (> 1: JAX faster), and the z-buffer's memory for ONE rendered view (memory_analysis of render_depth over the
N·h·w points of a leave-one-out render: temporaries + arguments).

Unless --no-aot, a subprocess with 8 simulated CPU devices then compiles r_geo ahead of time on abstract
ShapeDtypeStructs for a batch of --aot-batch scenes sharded over a TPU-shaped 8-device mesh (one scene per device,
as in the GRPO rewards stage) for each path, and prints per-device memory and XLA's FLOP / bytes-accessed estimates.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=21)
    p.add_argument("--sizes", default="336x518,168x259", help="comma-separated HxW")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--zbuffers", default="scatter,sort", help="comma list of z-buffer paths to time")
    p.add_argument("--motion-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best (and median) reported")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--no-aot", action="store_true", help="skip the AOT cost on the simulated 8-device mesh")
    p.add_argument("--aot-batch", type=int, default=8)
    p.add_argument("--aot", action="store_true", help=argparse.SUPPRESS)  # the AOT subprocess
    return p.parse_args()


ARGS = _parse()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if ARGS.aot:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from vggrpo_jax.data.toyworld import ToyworldConfig, camera_path, clip_geometry, render_clip  # noqa: E402
from vggrpo_jax.geometry import render_depth  # noqa: E402
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


GIB, MIB = 1024**3, 1024**2


def _interleaved(fns: dict, rounds: int) -> tuple[dict, dict, dict]:
    """Run every fn once per round, rounds interleaved: best and median seconds, and each fn's last output."""
    times = {k: [] for k in fns}
    outs = {}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return ({k: min(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in times.items()}, outs)


def _compiled(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    run = lambda: jax.block_until_ready(compiled(*args))
    run()  # warm-up
    return compile_s, run


def _view_memory(n_points: int, h: int, w: int, method: str) -> float:
    """MiB of temporaries + arguments of one render_depth over n_points (a leave-one-out render's point count)."""
    pts = jax.ShapeDtypeStruct((n_points, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((n_points,), jnp.bool_)
    cam, K = jax.ShapeDtypeStruct((4, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3), jnp.float32)
    fn = lambda p, c, k, m: render_depth(p, c, k, h, w, point_mask=m, method=method)
    mem = jax.jit(fn).lower(pts, cam, K, mask).compile().memory_analysis()
    return (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / MIB


def main() -> None:
    zbuffers = [z for z in ARGS.zbuffers.split(",") if z]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPU threads visible, "
          f"load average {os.getloadavg()[0]:.1f}); r_geo stride {ARGS.stride}, top_k {ARGS.top_k}; best (median) "
          f"of {ARGS.rounds} interleaved rounds")
    print(f"{'case':<42}{'compile s':>10}{'best s':>9}{'median s':>10}{'NumPy/JAX':>10}{'max|diff|':>11}"
          f"{'MiB/view':>10}")

    def row(name, c, best, med, ratio, d, mib=""):
        c = f"{c:.1f}" if c != "" else ""
        ratio = f"{math.floor(ratio * 100) / 100:.2f}" if ratio != "" else ""  # truncated, never rounded up
        d = f"{d:.2e}" if d != "" else ""
        mib = f"{mib:.1f}" if mib != "" else ""
        print(f"{name:<42}{c:>10}{best:>9.4f}{med:>10.4f}{ratio:>10}{d:>11}{mib:>10}", flush=True)

    # r_motion on a batch of jittered orbits (the GRPO group), 21 poses each.
    keys = jax.random.split(jax.random.key(0), ARGS.motion_batch)
    c2w = jax.jit(jax.vmap(lambda k: camera_path(k, 0, ARGS.views, 0.01)))(keys)
    comp, run = _compiled(lambda c: motion_smoothness(c).reward, c2w)
    c_np = np.asarray(c2w, np.float64)
    best, med, outs = _interleaved({"numpy": lambda: np_motion(c_np), "jax": run}, ARGS.rounds)
    diff = float(np.max(np.abs(np.asarray(outs["jax"]) - outs["numpy"])))
    row(f"r_motion {ARGS.motion_batch}x{ARGS.views} poses NumPy", "", best["numpy"], med["numpy"], "", "")
    row("r_motion JAX", comp, best["jax"], med["jax"], best["numpy"] / best["jax"], diff)

    for size in ARGS.sizes.split(","):
        H, W = (int(v) for v in size.split("x"))
        h, w = H // ARGS.stride, W // ARGS.stride
        cfg = ToyworldConfig(num_frames=ARGS.views, height=H, width=W, dynamic_prob=0.0)
        clip = render_clip(ARGS.seed, config=cfg)
        moving = render_clip(ARGS.seed, config=dataclasses.replace(cfg, dynamic_prob=1.0, speed_range=(0.05, 0.1)))
        static, dyn = clip_geometry(clip, "none"), clip_geometry(moving, "any4d")
        args = [np.asarray(clip[k], np.float64) for k in ("c2w", "intrinsics", "depth", "points")]
        fns, comps = {"numpy": lambda: np_reprojection(*args, top_k=ARGS.top_k, stride=ARGS.stride)}, {}
        for z in zbuffers:
            comps[z], fns[z] = _compiled(
                lambda g, z=z: reprojection_consistency(g, top_k=ARGS.top_k, stride=ARGS.stride, zbuffer=z), static)
        z = zbuffers[0]
        comps[z + "+flow"], fns[z + "+flow"] = _compiled(
            lambda g: reprojection_consistency(g, top_k=ARGS.top_k, stride=ARGS.stride, zbuffer=z), dyn)
        best, med, outs = _interleaved(fns, ARGS.rounds)
        ref_r, ref_e = outs["numpy"]
        row(f"r_geo {ARGS.views}x{H}x{W} NumPy", "", best["numpy"], med["numpy"], "", "")
        for z in zbuffers:
            diff = float(np.max(np.abs(np.asarray(outs[z].per_view_error) - ref_e)))
            mib = _view_memory((ARGS.views - 1) * h * w + h * w, h, w, z)
            row(f"  JAX zbuffer={z}", comps[z], best[z], med[z], best["numpy"] / best[z], diff, mib)
        z = zbuffers[0]
        row(f"  JAX zbuffer={z} + Any4D flow filter", comps[z + "+flow"], best[z + "+flow"], med[z + "+flow"], "", "")
        print(f"  (rewards: NumPy {ref_r:.5f}, " + ", ".join(f"{z} {float(outs[z].reward):.5f}" for z in zbuffers)
              + ")", flush=True)

    if not ARGS.no_aot:
        cmd = [sys.executable, __file__, "--aot", "--sizes", ARGS.sizes, "--views", str(ARGS.views), "--zbuffers",
               ARGS.zbuffers, "--stride", str(ARGS.stride), "--top-k", str(ARGS.top_k), "--aot-batch",
               str(ARGS.aot_batch)]
        subprocess.run(cmd, check=True)


def aot() -> None:
    """r_geo compiled on abstract inputs, batch sharded over an 8-device mesh: per-device memory and XLA's costs."""
    from vggrpo_jax.geometry import SceneGeometry  # noqa: PLC0415

    devices = jax.devices()
    mesh = Mesh(np.asarray(devices[:8]).reshape(8), ("data",))
    print(f"\nAOT on a TPU-shaped mesh of {len(devices[:8])} simulated CPU devices, {ARGS.aot_batch} scenes sharded "
          f"over it (per device: memory_analysis(); per program: cost_analysis())")
    print(f"{'case':<42}{'args MiB':>10}{'temp MiB':>10}{'GFLOP':>10}{'GB accessed':>13}")
    for size in ARGS.sizes.split(","):
        H, W = (int(v) for v in size.split("x"))
        N, B = ARGS.views, ARGS.aot_batch

        def sds(shape):
            spec = PartitionSpec("data", *([None] * (len(shape) - 1)))
            return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, spec))

        # What the LGM hands the reward: confidences and Any4D scene flow (so the dynamic-mask render runs too).
        geom = SceneGeometry(c2w=sds((B, N, 4, 4)), intrinsics=sds((B, N, 3, 3)), depth=sds((B, N, H, W)),
                             points=sds((B, N, H, W, 3)), conf=sds((B, N, H, W)), scene_flow=sds((B, N, H, W, 3)))
        for z in [z for z in ARGS.zbuffers.split(",") if z]:
            fn = jax.jit(lambda g, z=z: reprojection_consistency(g, top_k=ARGS.top_k, stride=ARGS.stride,
                                                                 zbuffer=z).reward)
            compiled = fn.lower(geom).compile()
            mem, cost = compiled.memory_analysis(), compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            name = f"r_geo {B}x{N}x{H}x{W} conf+flow {z}"
            print(f"{name:<42}{mem.argument_size_in_bytes / MIB:>10.0f}{mem.temp_size_in_bytes / MIB:>10.0f}"
                  f"{cost.get('flops', 0.0) / 1e9:>10.1f}{cost.get('bytes accessed', 0.0) / 1e9:>13.2f}",
                  flush=True)


if __name__ == "__main__":
    aot() if ARGS.aot else main()
