"""One full GRPO iteration at real sizes, compiled ahead of time on a simulated mesh: per-device memory and FLOPs.

    python benchmarks/grpo_aot.py [--config configs/wan21.py] [--devices 8] [--prompts 2] [--mesh fsdp=-1]

Stages as training runs them: the 20-step SDE rollout of P prompts × K samples with CFG, the LGM rewards (connector +
Any4D tail and heads at ℓ̂ = 12 + both rewards), and the GRPO update over the trained steps. The peak per device is
compared with a TPU v5e (16 GiB) and an H100 (80 GiB). On the CPU backend bf16 matmuls are computed in f32, so the
temporaries are an upper bound; XLA's FLOP counts count a scanned loop body once (see the analytic column).
"""

import argparse
import os
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/wan21.py")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--prompts", type=int, default=2, help="P prompts per batch (× K = rl.group_size samples)")
    p.add_argument("--mesh", default="fsdp=-1", help="comma list axis=size over data,fsdp,context,tensor")
    p.add_argument("--stitch-layer", type=int, default=12)
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.getcwd())

    from vggrpo_jax.backbones import load_config_file
    from vggrpo_jax.parallel import make_mesh
    from vggrpo_jax.grpo.aot import compile_grpo_iteration

    config = load_config_file(args.config)
    config.rl.prompts_per_batch = args.prompts
    mesh = make_mesh({k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))})
    t0 = time.perf_counter()
    out = compile_grpo_iteration(config, mesh, stitch_layer=args.stitch_layer)
    seconds = time.perf_counter() - t0
    shapes = out.pop("shapes")
    print(f"{args.config}: batch {shapes['batch']} (P={args.prompts} × K={config.rl.group_size}), latent "
          f"{shapes['latent']}, {shapes['num_steps']} steps ({shapes['trained_steps']} trained), mesh "
          f"{dict(mesh.shape)}; compiled in {seconds:.0f} s")
    print(f"{'stage':8s} {'args GiB':>9s} {'temp GiB':>9s} {'peak GiB':>9s} {'/16 GiB':>8s} {'/80 GiB':>8s} "
          f"{'XLA TFLOP':>10s}")
    for stage, s in out.items():
        print(f"{stage:8s} {s['argument_gib']:9.2f} {s['temp_gib']:9.2f} {s['peak_gib']:9.2f} "
              f"{s['peak_gib'] / 16:8.2f} {s['peak_gib'] / 80:8.2f} {s['flops'] / 1e12:10.2f}")


if __name__ == "__main__":
    main()
