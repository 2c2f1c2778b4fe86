"""AOT memory and FLOPs of the Wan DiT LoRA training step on an 8-device simulated mesh (no weights needed).

    python benchmarks/dit_aot.py [--model wan21_1_3b] [--mesh fsdp=8] [--batch 8] [--attention blocked]

Forward + backward (grads w.r.t. the LoRA adapters only), bf16 matmuls and weights, fp32 LoRA, scanned blocks,
512 text tokens, compiled for 33×240×416 (latent 16×9×30×52) and 81×480×832 (latent 16×21×60×104) videos.
Prints per-device memory (memory_analysis) and FLOPs (cost_analysis) next to the analytic matmul FLOPs; XLA's cost
analysis counts the body of every while loop (the 30 scanned layers, the attention tiles) once, so its figure is a
per-iteration count, not the step's total.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wan21_1_3b")
    ap.add_argument("--mesh", default="fsdp=8", help="comma-separated axis=size over data/fsdp/context/tensor")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--attention", default="blocked")
    ap.add_argument("--remat", default="full")
    ap.add_argument("--lora-rank", type=int, default=32)
    ap.add_argument("--devices", type=int, default=8)
    args = ap.parse_args()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from vggrpo_jax import parallel as par
    from vggrpo_jax.models.wan import WanConfig
    from vggrpo_jax.models.wan.aot import analytic_flops, compile_lora_step

    mesh = par.make_mesh({k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))})
    cfg = WanConfig.preset(args.model, dtype="bfloat16", param_dtype="bfloat16", remat_policy=args.remat,
                           lora_rank=args.lora_rank, lora_alpha=2.0 * args.lora_rank, attention=args.attention)
    latent_c = cfg.in_channels
    shapes = {"33x240x416": (latent_c, 9, 30, 52), "81x480x832": (latent_c, 21, 60, 104)}
    print(f"{args.model}: mesh {dict(mesh.shape)}, batch {args.batch}, attention {args.attention}, remat {args.remat}, "
          f"LoRA rank {args.lora_rank}")
    gib = 2**30
    for name, latent in shapes.items():
        t0 = time.perf_counter()
        compiled = compile_lora_step(cfg, mesh, args.batch, latent, text_len=512)
        dt = time.perf_counter() - t0
        m = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        an = analytic_flops(cfg, args.batch, latent)
        per_device_fwd = an["forward"] / mesh.size
        print(f"\n{name} (latent {latent}, {an['tokens']} tokens): compiled in {dt:.1f}s")
        print(f"  per device: arguments {m.argument_size_in_bytes / gib:.2f} GiB, outputs "
              f"{m.output_size_in_bytes / gib:.3f} GiB, temporaries {m.temp_size_in_bytes / gib:.2f} GiB, total "
              f"{(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / gib:.2f} GiB")
        print(f"  cost_analysis per device: {cost.get('flops', 0) / 1e12:.2f} TFLOP (loop bodies counted once), "
              f"{cost.get('bytes accessed', 0) / 1e9:.1f} GB accessed")
        print(f"  analytic per device: forward {per_device_fwd / 1e12:.1f} TFLOP; step with full remat ≈ "
              f"{3 * per_device_fwd / 1e12:.1f} TFLOP (forward, recomputed forward, backward to the activations)")


if __name__ == "__main__":
    main()
