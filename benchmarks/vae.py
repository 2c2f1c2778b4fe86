#!/usr/bin/env python
"""Wan VAE speed: jitted JAX (ours) against diffusers' AutoencoderKLWan on this CPU, same weights, same thread count.

    python benchmarks/vae.py                       # Wan2.1 structure at base_dim 32, 1×3×9×256×256
    python benchmarks/vae.py --variant wan22 --frames 17 --threads 2
    python benchmarks/vae.py --aot                 # full Wan2.1 VAE, 81×480×832, 8 simulated devices:
                                                   # per-device memory and FLOPs extrapolated over the scan

Prints seconds per call (median of --repeats, compile excluded and reported separately), the max-abs difference of
the outputs (a sanity check that both ran the same network) and the ratio torch / jax (> 1: JAX faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["wan21", "wan22"], default="wan21")
    p.add_argument("--base-dim", type=int, default=32)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--aot", action="store_true", help="AOT figures of the full Wan2.1 VAE at 81×480×832 instead")
    return p.parse_args()


ARGS = _parse()
if ARGS.aot:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
else:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={ARGS.threads}"
    )
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from vggrpo_jax.models.wan.vae import WanVAEConfig  # noqa: E402


def _time(fn, repeats: int) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def speed() -> None:
    import torch  # noqa: PLC0415
    from diffusers import AutoencoderKLWan  # noqa: PLC0415

    from vggrpo_jax.convert.wan_vae import from_torch_state_dict  # noqa: PLC0415

    torch.set_num_threads(ARGS.threads)
    preset = WanVAEConfig.wan21 if ARGS.variant == "wan21" else WanVAEConfig.wan22
    cfg = preset(base_dim=ARGS.base_dim, decoder_base_dim=None)
    torch.manual_seed(0)
    ref = AutoencoderKLWan(**cfg.to_diffusers_config()).eval()
    model = from_torch_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (ARGS.batch, 3, ARGS.frames, ARGS.size, ARGS.size)).astype(np.float32)
    print(
        f"{ARGS.variant} base_dim {ARGS.base_dim}, video {x.shape}, threads {ARGS.threads} "
        f"(torch {torch.get_num_threads()}), jax {jax.__version__} on {jax.devices()[0].platform}"
    )

    encode = nnx.jit(lambda m, v: m.encode(v))
    decode = nnx.jit(lambda m, z: m.decode(z))
    t = time.perf_counter()
    mean = jax.block_until_ready(encode(model, x))[0]
    t_enc_compile = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(decode(model, mean))
    t_dec_compile = time.perf_counter() - t

    xt = torch.from_numpy(x)
    with torch.no_grad():
        t_ref_enc, ref_mean = _time(lambda: ref.encode(xt).latent_dist.mean, ARGS.repeats)
        t_ref_dec, ref_video = _time(lambda: ref.decode(ref_mean).sample, ARGS.repeats)
    t_enc, jmean = _time(lambda: jax.block_until_ready(encode(model, x))[0], ARGS.repeats)
    t_dec, jvideo = _time(lambda: jax.block_until_ready(decode(model, np.asarray(ref_mean.numpy()))), ARGS.repeats)

    err_enc = float(np.abs(np.asarray(jmean) - ref_mean.numpy()).max())
    err_dec = float(np.abs(np.asarray(jvideo) - ref_video.numpy()).max())
    print(f"{'':8s} {'diffusers s':>12s} {'jax s':>10s} {'torch/jax':>10s} {'jax compile s':>14s} {'max-abs':>9s}")
    for name, t_ref, t_jax, t_comp, err in (
        ("encode", t_ref_enc, t_enc, t_enc_compile, err_enc),
        ("decode", t_ref_dec, t_dec, t_dec_compile, err_dec),
    ):
        print(f"{name:8s} {t_ref:12.3f} {t_jax:10.3f} {t_ref / t_jax:10.2f} {t_comp:14.1f} {err:9.2e}")


def aot() -> None:
    from vggrpo_jax.models.wan.vae_aot import compile_vae  # noqa: PLC0415
    from vggrpo_jax.parallel import make_mesh  # noqa: PLC0415

    cfg = WanVAEConfig.wan21()
    for name, mesh_cfg, batch in (("width over 8", {"context": 8}, 1), ("batch over 8", {"data": 8}, 8)):
        mesh = make_mesh(mesh_cfg)
        for what in ("encode", "decode"):
            t = time.perf_counter()
            full = compile_vae(cfg, mesh, batch, 81, 480, 832, what)
            one = compile_vae(cfg, mesh, batch, 1, 480, 832, what)  # the first chunk alone
            # XLA counts the scan body once: total = first chunk + 20 × (one steady chunk)
            flops = one.flops + 20 * (full.flops - one.flops)
            print(f"[{name}] {full.line()}")
            print(
                f"[{name}] {what}: FLOPs per device for all 81 frames ≈ {flops:.3e} "
                f"(first chunk {one.flops:.3e}, steady chunk {full.flops - one.flops:.3e}); "
                f"compile {time.perf_counter() - t:.1f} s"
            )


if __name__ == "__main__":
    aot() if ARGS.aot else speed()
    sys.exit(0)
