"""LGM-guided ODE sampling at real sizes, compiled ahead of time on a simulated mesh: per-device memory and FLOPs.

    python benchmarks/guidance_aot.py [--config configs/wan21.py] [--devices 8] [--batch 8] [--steps 50]
                                      [--mesh fsdp=-1]

Three programs side by side (vggrpo_jax/guidance_aot.py): the unguided ODE sampler, guidance through the DiT
(∇_{x_t} r(x_t − σ·v(x_t)): DiT forward with CFG + LGM + backward through both), and guidance through the LGM only
(∇_{x̂0} r: no DiT backward). Defaults: Wan2.1-1.3B at 33×240×416 (latent 16×9×30×52), 8 videos (one per device,
CFG doubles the rows), the LGM stitched at ℓ̂ = 12 on the full Any4D. On the CPU backend bf16 matmuls are computed in
f32, so the temporaries are an upper bound; XLA counts a scanned loop body once, so FLOPs are per step.
"""

import argparse
import os
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/wan21.py")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="videos per sampler call (global)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--mesh", default="fsdp=-1", help="comma list axis=size over data,fsdp,context,tensor")
    p.add_argument("--stitch-layer", type=int, default=12)
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.getcwd())

    from vggrpo_jax.build import load_config_file
    from vggrpo_jax.guidance_aot import compile_guided_sampling
    from vggrpo_jax.parallel import make_mesh

    config = load_config_file(args.config)
    mesh = make_mesh({k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))})
    t0 = time.perf_counter()
    out = compile_guided_sampling(config, mesh, batch=args.batch, num_steps=args.steps, stitch_layer=args.stitch_layer)
    seconds = time.perf_counter() - t0
    shapes = out.pop("shapes")
    v = config.video
    print(f"{args.config}: {v.num_frames}×{v.height}×{v.width} (latent {shapes['latent']}), batch {shapes['batch']} "
          f"(+CFG), {shapes['num_steps']} steps, text {shapes['text_len']}, mesh {dict(mesh.shape)}; "
          f"compiled in {seconds:.0f} s")
    base = out["unguided"]
    print(f"{'program':22s} {'args GiB':>9s} {'temp GiB':>9s} {'peak GiB':>9s} {'×unguided':>10s} {'/80 GiB':>8s} "
          f"{'XLA TFLOP':>10s} {'×unguided':>10s}")
    for name, s in out.items():
        print(f"{name:22s} {s['argument_gib']:9.2f} {s['temp_gib']:9.2f} {s['peak_gib']:9.2f} "
              f"{s['peak_gib'] / base['peak_gib']:10.2f} {s['peak_gib'] / 80:8.2f} {s['flops'] / 1e12:10.2f} "
              f"{s['flops'] / max(base['flops'], 1.0):10.2f}")


if __name__ == "__main__":
    main()
