"""Latent reward (LGM) vs RGB reward (VAE decode + Any4D), side by side at the same shapes (the paper's Table 2e).

Both paths start from the same normalised Wan2.1 latents and end in the same rewards (r_motion + r_geo):
    latent: LGM(z) = Any4D tail (blocks ℓ..23 + heads) ∘ connector            → rewards
    RGB:    Any4D(resize(pick(decode(z))))  (the full model on the view frames) → rewards
Weights are random (cost does not depend on their values); architectures are the real Wan2.1 VAE and full Any4D.

1. Measured on this CPU at a reduced shape (default 9 frames × 64×112): wall time (median of --repeats) and the
   compiled program's memory (arguments + temporaries + outputs, XLA memory_analysis; the CPU has no allocator stats).
2. AOT on an 8-device simulated mesh (FSDP over the params, one video per device) at the Flow-GRPO shape
   (33×240×416) and the full Wan2.1 shape (81×480×832): per-device memory and FLOPs from the compiled programs.
Paper (Wan2.2-5B, 4 videos): latent / RGB = 0.755 in time, 0.89 in memory. Target here: ≤ 0.5 in time.

0. Measured at the toy world's shape with the shipped zoo (configs/toy.py's reward batch, 16 × 17×64×64).

    python benchmarks/reward_cost.py [--stitch_layer 4] [--repeats 3] [--skip_aot] [--skip_cpu] [--skip_toy]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

import vggrpo_jax  # noqa: E402,F401
from vggrpo_jax.lgm.connector import Connector, ConnectorConfig  # noqa: E402
from vggrpo_jax.lgm.host_init import random_init  # noqa: E402
from vggrpo_jax.lgm.model import LatentGeometryModel  # noqa: E402
from vggrpo_jax.lgm.rgb_path import RGBGeometryPath  # noqa: E402
from vggrpo_jax.models.any4d import Any4D, Any4DConfig  # noqa: E402
from vggrpo_jax.models.wan.vae import WanVAE  # noqa: E402
from vggrpo_jax.models.wan.vae_config import WanVAEConfig  # noqa: E402
from vggrpo_jax.parallel import abstract_state_shardings, make_mesh  # noqa: E402
from vggrpo_jax.rewards import motion_smoothness, reprojection_consistency  # noqa: E402


def _rewards(g, stride):
    return motion_smoothness(g.c2w).reward + reprojection_consistency(g, stride=stride, conf_quantile=0.0).reward


def _factories(stitch_layer: int):
    vae_f = lambda: WanVAE(WanVAEConfig.wan21(), nnx.Rngs(0))  # noqa: E731
    any4d_f = lambda: Any4D(Any4DConfig.full(), nnx.Rngs(0))  # noqa: E731
    cfg = Any4DConfig.full()
    conn_f = lambda: Connector(ConnectorConfig(), latent_channels=16, trunk_dim=cfg.trunk_dim,  # noqa: E731
                               encoder_dim=cfg.encoder_dim, stitch_layer=stitch_layer, tap_layers=cfg.tap_layers,
                               rngs=nnx.Rngs(0))
    return vae_f, any4d_f, conn_f


def _prune_lgm_state(state, stitch_layer: int):
    """The LGM never runs the encoder, the fusion norm, proj_embed or blocks < ℓ: drop them from its state (empty
    placeholders keep the graph mergeable) so its memory is what a deployed LGM holds."""
    flat = []
    for path, var in nnx.to_flat_state(state):
        p = [str(x) for x in path]
        unused = (
            p[:2] == ["any4d", "encoder"] or p[:2] == ["any4d", "fusion_norm_layer"]
            or p[:2] == ["any4d", "scale_token"] or p[:3] == ["any4d", "info_sharing", "proj_embed"]
            or (p[:3] == ["any4d", "info_sharing", "self_attention_blocks"] and int(p[3]) < stitch_layer)
        )
        if unused:  # an empty placeholder, replicated (no logical axes)
            var = var.replace(jnp.zeros((0,), var.get_value().dtype), out_sharding=None)
        flat.append((path, var))
    return nnx.from_flat_state(flat)


def build(stitch_layer: int, abstract: bool):
    vae_f, any4d_f, conn_f = _factories(stitch_layer)
    make = (lambda f, seed: nnx.eval_shape(f)) if abstract else (lambda f, seed: random_init(f, seed))
    from vggrpo_jax.lgm.connector import ZERO_INIT  # noqa: PLC0415

    vae = make(vae_f, 0)
    any4d = make(any4d_f, 1)
    conn = nnx.eval_shape(conn_f) if abstract else random_init(conn_f, 2, zeros=ZERO_INIT)
    lgm = LatentGeometryModel(conn, any4d)
    rgb = RGBGeometryPath(vae, any4d, spatial_stride=2)
    lgm_g, lgm_s = nnx.split(lgm)
    lgm_s = _prune_lgm_state(lgm_s, stitch_layer)
    rgb_g, rgb_s = nnx.split(rgb)
    return (lgm_g, lgm_s), (rgb_g, rgb_s)


def _fn(graphdef, stride):
    def f(state, z):
        return _rewards(nnx.merge(graphdef, state)(z), stride)

    return f


def _mem(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def _timed(graphdef, state, z, stride: int, repeats: int):
    """(median seconds of `repeats` calls after a warm-up, the compiled program) of the rewards of z."""
    compiled = jax.jit(_fn(graphdef, stride)).lower(state, z).compile()
    jax.block_until_ready(compiled(state, z))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(state, z))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), compiled


def latent_shape(frames: int, height: int, width: int, batch: int) -> tuple[int, ...]:
    return (batch, 16, 1 + (frames - 1) // 4, height // 8, width // 8)


def cpu(args) -> None:
    (lg, ls), (rg, rs) = build(args.stitch_layer, abstract=False)
    f, h, w = args.cpu_shape
    z = jax.random.normal(jax.random.key(0), latent_shape(f, h, w, args.cpu_batch), jnp.float32)
    rows = {}
    with jax.default_device(jax.devices()[0]):
        for name, g, s in (("latent (LGM)", lg, ls), ("RGB (decode+Any4D)", rg, rs)):
            seconds, compiled = _timed(g, s, z, args.reward_stride, args.repeats)
            rows[name] = (seconds, _mem(compiled))
    print(f"\n[CPU, measured] {args.cpu_batch}×{f}×{h}×{w} video (latent {latent_shape(f, h, w, args.cpu_batch)}), "
          f"ℓ = {args.stitch_layer}, median of {args.repeats}")
    for name, (t, m) in rows.items():
        print(f"  {name:<22} time {t * 1e3:9.1f} ms   compiled memory {m / 2**20:9.1f} MiB")
    (tl, ml), (tr, mr) = rows["latent (LGM)"], rows["RGB (decode+Any4D)"]
    print(f"  ratio latent/RGB: time {tl / tr:.3f}   memory {ml / mr:.3f}   (paper 0.755 / 0.89; target time ≤ 0.5)")


def toy(args) -> None:
    """At the toy world's shape with the shipped zoo models (configs/toy.py's reward batch and reward options, the
    connector at configs/lgm_zoo_quick.py's stitch layer; connector weights random: cost does not depend on them)."""
    from vggrpo_jax import zoo  # noqa: PLC0415
    from vggrpo_jax.config_files import load_config_file  # noqa: PLC0415
    from vggrpo_jax.lgm.connector import build_connector  # noqa: PLC0415

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "toy.py"))
    lc = load_config_file(c.lgm.build_config)
    batch = int(c.rl.prompts_per_batch) * int(c.rl.group_size)
    layer = int(lc.stitch.layers[0])
    vae = zoo.load("vae")
    any4d = zoo.load("geometry")
    conn_cfg = ConnectorConfig.from_dict(lc.connector.to_dict())
    conn = build_connector(conn_cfg, latent_channels=int(vae.config.z_dim), any4d_config=any4d.config,
                           stitch_layer=layer)
    lgm_g, lgm_s = nnx.split(LatentGeometryModel(conn, any4d))
    rgb_g, rgb_s = nnx.split(RGBGeometryPath(vae, any4d, spatial_stride=int(conn_cfg.stride[1])))
    f, h, w = zoo.VIDEO
    z = jax.random.normal(jax.random.key(0), (batch, int(vae.config.z_dim), 1 + (f - 1) // 4, h // 8, w // 8))
    stride = int(c.rewards.stride)
    rows = {}
    for name, g, st in (("latent (LGM)", lgm_g, lgm_s), ("RGB (decode+Any4D)", rgb_g, rgb_s)):
        seconds, compiled = _timed(g, st, z, stride, args.repeats)
        rows[name] = (seconds, _mem(compiled), _flops(compiled))
    print(f"\n[CPU, measured] toy world (shipped zoo): GRPO's reward batch {batch}×{f}×{h}×{w}, "
          f"latent {tuple(z.shape)}, ℓ = {layer}, median of {args.repeats}")
    for name, (t, m, fl) in rows.items():
        print(f"  {name:<22} time {t * 1e3:9.1f} ms   compiled memory {m / 2**20:9.1f} MiB   {fl / 1e9:8.2f} GFLOP")
    (tl, ml, fll), (tr, mr, flr) = rows["latent (LGM)"], rows["RGB (decode+Any4D)"]
    print(f"  ratio latent/RGB: time {tl / tr:.3f}   memory {ml / mr:.3f}   FLOPs {fll / flr:.3f}")
    sys.stdout.flush()


def aot(args) -> None:
    mesh = make_mesh({"fsdp": -1})
    (lg, ls), (rg, rs) = build(args.stitch_layer, abstract=True)
    n = len(jax.devices())
    for label, (f, h, w) in (("Flow-GRPO", (33, 240, 416)), ("Wan2.1 full", (81, 480, 832))):
        shape = latent_shape(f, h, w, n)
        z = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
        rows = {}
        for name, g, s in (("latent (LGM)", lg, ls), ("RGB (decode+Any4D)", rg, rs)):
            shard = abstract_state_shardings(s, mesh)
            abs_s = jax.tree.map(
                lambda v, sh: v.replace(jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=sh)),
                s, shard, is_leaf=lambda x: isinstance(x, nnx.Variable),
            )
            t = time.perf_counter()
            with jax.set_mesh(mesh):
                compiled = jax.jit(_fn(g, args.reward_stride)).lower(abs_s, z).compile()
            rows[name] = (_mem(compiled), _flops(compiled), time.perf_counter() - t)
        print(f"\n[AOT, 8-device mesh, per device] {label}: {f}×{h}×{w}, {n} videos (1 per device), "
              f"latent {shape}, ℓ = {args.stitch_layer}")
        for name, (m, fl, ct) in rows.items():
            print(f"  {name:<22} memory {m / 2**30:8.2f} GiB   {fl / 1e12:9.2f} TFLOP   (compile {ct:.0f} s)")
        (ml, fl_l, _), (mr, fl_r, _) = rows["latent (LGM)"], rows["RGB (decode+Any4D)"]
        print(f"  ratio latent/RGB: memory {ml / mr:.3f}   FLOPs {fl_l / fl_r:.3f}")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stitch_layer", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu_shape", type=int, nargs=3, default=(9, 64, 112), metavar=("F", "H", "W"))
    p.add_argument("--cpu_batch", type=int, default=1)
    p.add_argument("--reward_stride", type=int, default=4)
    p.add_argument("--skip_cpu", action="store_true")
    p.add_argument("--skip_aot", action="store_true")
    p.add_argument("--skip_toy", action="store_true")
    args = p.parse_args()
    if not args.skip_toy:
        toy(args)
    if not args.skip_cpu:
        cpu(args)
    if not args.skip_aot:
        aot(args)


if __name__ == "__main__":
    main()
