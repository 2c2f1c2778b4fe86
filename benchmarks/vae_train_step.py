#!/usr/bin/env python
"""Toy Wan2.1-VAE training-step speed on XLA:CPU: widths, crop sizes, batch, dtype, conv formulation, XLA flags.

    python benchmarks/vae_train_step.py               # the sizing table (widths × crops) + the speed options
    python benchmarks/vae_train_step.py --quick       # fewer variants
    python benchmarks/vae_train_step.py --match=scan  # one comparison (here: unrolled vs scanned steady chunks)
    python benchmarks/vae_train_step.py --conv        # one 3×3×3 causal conv (16 → 16 ch, 8 × 6 × 32 × 32),
                                                      # fwd + bwd, per formulation × XLA flag set (compiles in s)

Also: the steady 4-frame chunks unrolled (the model's default for short clips) against one lax.scan.

One step = encode → reparameterized sample → decode → L1 + MSE + KL → grad → Adam update, jitted with donation, as
the toy VAE job runs it. Each variant runs in its own process (XLA flags are read once per process), one after the
other, with the compile excluded. Prints seconds per step (median of --steps), crops/s, and each option's ratio
against its baseline measured in the same run (> 1: faster than the baseline).

Conv formulations (monkeypatched into CausalConv3d.conv in the child, to decide whether the model should change):
  2d     the model's own: one 2-D conv per temporal tap, summed
  taps   the kt taps stacked on channels: one 2-D conv with kt·C input channels
  3d     XLA's native 3-D convolution
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BASE = dict(base=16, mult=(1, 1, 1, 1), res=1, frames=5, size=32, batch=8, dtype="float32", conv="2d", flags="",
            unroll=4)


def _variants(quick: bool) -> list[tuple[str, dict, str | None]]:
    """(name, overrides, baseline name or None)."""
    v: list[tuple[str, dict, str | None]] = []
    sizes = [(5, 32)] if quick else [(5, 32), (9, 32)]
    bases = [8, 16] if quick else [8, 12, 16]
    for f, s in sizes:
        for b in bases:
            v.append((f"base{b} {f}x{s}x{s} b8", dict(base=b, frames=f, size=s), None))
    v.append(("base16 5x32x32 b4", dict(batch=4), "base16 5x32x32 b8"))
    if not quick:
        v.append(("wan-form base8 mult1244 res2", dict(base=8, mult=(1, 2, 4, 4), res=2), "base8 5x32x32 b8"))
    ref = "base16 5x32x32 b8"
    # The steady chunks unrolled (the model's default for ≤ 4 chunks) against one lax.scan: XLA:CPU's backward of
    # the scan is the slow part, so the ratio shows at 9 frames (2 steady chunks) and beyond.
    v.append(("base16 9x32x32 b8", dict(frames=9), None))
    v.append(("9 frames, steady chunks in lax.scan", dict(frames=9, unroll=0), "base16 9x32x32 b8"))
    v.append(("wan widths base16 mult1244 9x32x32", dict(frames=9, mult=(1, 2, 4, 4)), "base16 9x32x32 b8"))
    v.append(("conv=taps", dict(conv="taps"), ref))
    v.append(("conv=3d", dict(conv="3d"), ref))
    v.append(("bfloat16 compute", dict(dtype="bfloat16"), ref))
    for flag in ("--xla_cpu_use_xnnpack=true", "--xla_cpu_enable_fast_math=true", "--xla_cpu_use_onednn=true",
                 "--xla_cpu_use_thunk_runtime=false", "--xla_cpu_multi_thread_eigen=false"):
        v.append((flag, dict(flags=flag), ref))
    return v


def _child(spec: dict, steps: int) -> dict:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + spec["flags"]).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from vggrpo_jax.models.wan import vae_layers
    from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig

    if spec["conv"] != "2d":
        orig = vae_layers.CausalConv3d.conv

        def conv(self, x):
            kernel = self.kernel.get_value().astype(self.dtype)
            kt, kh, kw, c, o = kernel.shape
            if kh == kw == 1 and self.spatial_pad == (0, 0):
                return orig(self, x)
            x = x.astype(self.dtype)
            st, (ph, pw) = self.stride[0], self.spatial_pad
            b, t = x.shape[:2]
            t_out = (t - kt) // st + 1
            if spec["conv"] == "3d":
                y = jax.lax.conv_general_dilated(
                    x, kernel, window_strides=self.stride, padding=((0, 0), (ph, ph), (pw, pw)),
                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
            else:
                taps = [jax.lax.slice_in_dim(x, i, i + st * (t_out - 1) + 1, stride=st, axis=1) for i in range(kt)]
                xs = jnp.concatenate(taps, -1).reshape(b * t_out, *x.shape[2:4], kt * c)
                k2 = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * c, o)
                y = jax.lax.conv_general_dilated(xs, k2, self.stride[1:], ((ph, ph), (pw, pw)),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
                y = y.reshape(b, t_out, *y.shape[1:])
            return y + self.bias.get_value().astype(self.dtype)

        vae_layers.CausalConv3d.conv = conv

    dtype = jnp.dtype(spec["dtype"])
    cfg = WanVAEConfig(base_dim=spec["base"], dim_mult=tuple(spec["mult"]), num_res_blocks=spec["res"],
                       latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16, dtype=dtype,
                       unroll_chunks=int(spec.get("unroll", 4)))
    model = WanVAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    tx = optax.adam(1e-4)
    state = (params, tx.init(params))

    def loss_fn(p, video, key):
        vae = nnx.merge(graphdef, p)
        mean, logvar = vae.encode(video)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        rec = vae.decode(z)
        kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1 - logvar)
        return jnp.mean(jnp.abs(rec - video)) + jnp.mean((rec - video) ** 2) + 1e-4 * kl

    @jax.jit
    def step(state, video, key):
        p, o = state
        loss, g = jax.value_and_grad(loss_fn)(p, video, key)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    step = jax.jit(step.__wrapped__, donate_argnums=0)
    video = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (spec["batch"], 3, spec["frames"], spec["size"],
                                                                     spec["size"])).astype(np.float32))
    t0 = time.perf_counter()
    state, loss = step(state, video, jax.random.key(0))
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, loss = step(state, video, jax.random.key(i + 1))
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    return dict(step_s=statistics.median(times), min_s=min(times), compile_s=compile_s, params=int(n_params),
                loss=float(loss))


CONV_FLAGS = ("", "--xla_cpu_use_xnnpack=true", "--xla_cpu_use_onednn=true", "--xla_cpu_enable_fast_math=true")


def _conv_child(rounds: int = 5) -> dict[str, float]:
    """Median fwd+bwd seconds of one 3×3×3 conv layer in each formulation, interleaved over `rounds`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    b, t, h, w, c, o = 8, 6, 32, 32, 16, 16
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((b, t, h, w, c), np.float32))
    k = jnp.asarray(rng.random((3, 3, 3, c, o), np.float32) * 0.1)
    dn2, dn3 = ("NHWC", "HWIO", "NHWC"), ("NDHWC", "DHWIO", "NDHWC")

    def f2d(x, k):
        return sum(jax.lax.conv_general_dilated(x[:, i : i + t - 2].reshape(-1, h, w, c), k[i], (1, 1),
                                                ((1, 1), (1, 1)), dimension_numbers=dn2) for i in range(3))

    def ftaps(x, k):
        xs = jnp.concatenate([x[:, i : i + t - 2] for i in range(3)], -1).reshape(-1, h, w, 3 * c)
        k2 = jnp.transpose(k, (1, 2, 0, 3, 4)).reshape(3, 3, 3 * c, o)
        return jax.lax.conv_general_dilated(xs, k2, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn2)

    def f3d(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1, 1), ((0, 0), (1, 1), (1, 1)), dimension_numbers=dn3)

    def fim2col(x, k):
        xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
        cols = [xp[:, a : a + t - 2, i : i + h, j : j + w] for a in range(3) for i in range(3) for j in range(3)]
        return jnp.concatenate(cols, -1).reshape(-1, 27 * c) @ k.reshape(27 * c, o)

    fns = {"2d (model)": f2d, "taps": ftaps, "3d": f3d, "im2col": fim2col}
    grads = {n: jax.jit(jax.value_and_grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
             for n, f in fns.items()}
    for g in grads.values():
        jax.block_until_ready(g(x, k))
    times: dict[str, list[float]] = {n: [] for n in grads}
    for _ in range(rounds):
        for n, g in grads.items():
            t0 = time.perf_counter()
            for _ in range(3):
                jax.block_until_ready(g(x, k))
            times[n].append((time.perf_counter() - t0) / 3)
    return {n: statistics.median(v) for n, v in times.items()}


def _conv_table(env: dict) -> None:
    base = None
    print(f"{'XLA flags':36s} {'formulation':12s} {'ms fwd+bwd':>10s}  vs model's 2d, no flags")
    for flags in CONV_FLAGS:
        proc = subprocess.run([sys.executable, __file__, "--conv-one"], capture_output=True, text=True,
                              env=dict(env, XLA_FLAGS=flags))
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{flags or '(none)':36s} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:80]}")
            continue
        r = json.loads(line[0][7:])
        base = base or r["2d (model)"]
        for n, sec in r.items():
            print(f"{flags or '(none)':36s} {n:12s} {sec * 1e3:10.1f}  {base / sec:.2f}×", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--conv", action="store_true", help="the per-layer conv table instead of the train steps")
    p.add_argument("--match", default="", help="only the variants whose name contains this (and their baselines)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--conv-one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_child(json.loads(args.one), args.steps)))
        return
    if args.conv_one:
        print("RESULT " + json.dumps(_conv_child()))
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    if args.conv:
        _conv_table(env)
        return
    results: dict[str, dict] = {}
    print(f"{'variant':40s} {'params':>8s} {'s/step':>8s} {'min':>7s} {'crops/s':>8s} {'compile':>8s}  vs baseline")
    variants = _variants(args.quick)
    if args.match:
        keep = {n for n, _, r in variants if args.match in n} | {r for n, _, r in variants if args.match in n and r}
        variants = [v for v in variants if v[0] in keep]
    for name, over, ref in variants:
        spec = dict(BASE, **over)
        proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", json.dumps(spec)],
                              capture_output=True, text=True, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1][:80]
            print(f"{name:40s} failed: {err}", flush=True)
            continue
        r = results[name] = json.loads(line[0][7:])
        r["crops_s"] = spec["batch"] / r["step_s"]
        ratio = f"{r['crops_s'] / results[ref]['crops_s']:.2f}× the crops/s of '{ref}'" if ref in results else ""
        print(f"{name:40s} {r['params']:8d} {r['step_s']:8.3f} {r['min_s']:7.3f} {spec['batch'] / r['step_s']:8.2f} "
              f"{r['compile_s']:7.1f}s  {ratio}", flush=True)


if __name__ == "__main__":
    main()
