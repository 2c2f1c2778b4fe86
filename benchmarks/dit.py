"""Wan DiT speed on CPU: jitted JAX vs diffusers' WanTransformer3DModel (PyTorch), same weights, same thread count.

    python benchmarks/dit.py [--repeats 3] [--threads N]

Small-but-real config: dim 512 (4 heads × 128), ffn 2048, 8 layers, text_dim 4096; latent 16×8×32×32 → 2,048 tokens,
64 text tokens, batch 1, fp32. Forward, and forward+backward of mean(out²) w.r.t. all parameters (what
loss.backward() computes in PyTorch). Each figure is the best of `repeats` rounds after a warm-up; each round runs
every variant once, so that machine load hits all of them alike. "Where the time goes" times the attention kernels
alone on the model's shapes (8 layers of self-attention over 2,048 tokens and cross-attention over 64).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args()

    # XLA's CPU client sizes its thread pool from the visible cores; match PyTorch to it.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import WanTransformer3DModel
    from flax import nnx

    from vggrpo_jax.convert.wan_transformer import from_torch_state_dict
    from vggrpo_jax.models.wan import WanConfig
    from vggrpo_jax.models.wan import attention as attn_lib

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, XLA CPU devices {jax.device_count()}, cores {os.cpu_count()}")

    cfg = WanConfig(num_attention_heads=4, attention_head_dim=128, ffn_dim=2048, num_layers=args.layers,
                    in_channels=16, out_channels=16, text_dim=4096)
    torch.manual_seed(0)
    tm = WanTransformer3DModel(**cfg.to_diffusers_config()).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 8, 32, 32), dtype=np.float32)
    t = np.array([500.0], np.float32)
    e = rng.standard_normal((1, 64, 4096), dtype=np.float32)
    tx, tt, te = (torch.from_numpy(a) for a in (x, t, e))
    jx, jt, je = (jnp.asarray(a) for a in (x, t, e))

    def best_of(fns: dict, n=args.repeats) -> dict:
        """Best time of each function over n rounds; rounds interleave the functions (load hits all alike)."""
        for fn in fns.values():
            fn()  # warm-up (and compile)
        times = {k: [] for k in fns}
        for _ in range(n):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        return {k: min(v) for k, v in times.items()}

    # ------------------------------------------------------------------------------------------- PyTorch
    def torch_fwd():
        with torch.no_grad():
            tm(tx, tt, te, return_dict=False)

    def torch_fwd_bwd():
        tm.zero_grad(set_to_none=True)
        out = tm(tx, tt, te, return_dict=False)[0]
        out.square().mean().backward()

    # ----------------------------------------------------------------------------------------------- JAX
    sd = tm.state_dict()

    def jax_fns(**runtime):
        model = from_torch_state_dict(sd, cfg.replace(**runtime))
        graphdef, params = nnx.split(model)

        @jax.jit
        def fwd(params, x, t, e):
            return nnx.merge(graphdef, params)(x, t, e)

        @jax.jit
        def fwd_bwd(params, x, t, e):
            return jax.grad(lambda p: jnp.mean(jnp.square(nnx.merge(graphdef, p)(x, t, e))))(params)

        return (lambda: jax.block_until_ready(fwd(params, jx, jt, je)),
                lambda: jax.block_until_ready(fwd_bwd(params, jx, jt, je)))

    variants = {
        "jax blocked (default)": jax_fns(attention="blocked"),
        "jax xla attention": jax_fns(attention="xla"),
    }
    out_t = tm(tx, tt, te, return_dict=False)[0].detach().numpy()
    out_j = np.asarray(jax.jit(lambda p: nnx.merge(*p)(jx, jt, je))(nnx.split(from_torch_state_dict(sd, cfg))))
    print(f"max |JAX - diffusers| on the benchmark inputs: {np.max(np.abs(out_j - out_t)):.2e}")

    fns = {"diffusers (torch)": (torch_fwd, torch_fwd_bwd), **variants}
    fwd_t = best_of({k: v[0] for k, v in fns.items()})
    fwd_bwd_t = best_of({k: v[1] for k, v in fns.items()})
    rows = {k: (fwd_t[k], fwd_bwd_t[k]) for k in fns}
    base_f, base_fb = rows["diffusers (torch)"]
    print(f"\n{'':24s} {'forward':>9s} {'fwd+bwd':>9s} {'fwd ratio':>10s} {'fwd+bwd ratio':>14s}  (ratio = time / diffusers)")
    for name, (f, fb) in rows.items():
        print(f"{name:24s} {f:8.3f}s {fb:8.3f}s {f / base_f:10.2f} {fb / base_fb:14.2f}", flush=True)

    # ---------------------------------------------------------------------------------- where the time goes
    layers = cfg.num_layers
    q = rng.standard_normal((1, 2048, 4, 128), dtype=np.float32)
    kc = rng.standard_normal((1, 64, 4, 128), dtype=np.float32)
    tq, tkc = (torch.from_numpy(a).transpose(1, 2).contiguous() for a in (q, kc))

    def torch_attn(grad):
        def run():
            qq = tq.clone().requires_grad_(grad)
            for _ in range(layers):
                o = torch.nn.functional.scaled_dot_product_attention(qq, qq, qq)
                o2 = torch.nn.functional.scaled_dot_product_attention(qq, tkc, tkc)
                if grad:
                    (o.square().sum() + o2.square().sum()).backward()
        if grad:
            return run
        return lambda: torch.no_grad()(run)()

    def jax_attn(kind, grad):
        def loss(q, kc):
            o = attn_lib.attention(q, q, q, kind)
            o2 = attn_lib.attention(q, kc, kc, kind)
            return jnp.sum(jnp.square(o)) + jnp.sum(jnp.square(o2))

        f = jax.jit(jax.grad(loss) if grad else loss)
        jq, jkc = jnp.asarray(q), jnp.asarray(kc)

        def run():
            for _ in range(layers):
                jax.block_until_ready(f(jq, jkc))
        return run

    af = best_of({"diffusers (torch)": torch_attn(False), "jax blocked (default)": jax_attn("blocked", False),
                  "jax xla attention": jax_attn("xla", False)})
    afb = best_of({"diffusers (torch)": torch_attn(True), "jax blocked (default)": jax_attn("blocked", True),
                   "jax xla attention": jax_attn("xla", True)})
    attn = {k: (af[k], afb[k]) for k in af}
    print(f"\nwhere the time goes: attention alone ({layers} layers: self 2048×2048 + cross 2048×64, 4 heads × 128)")
    print(f"{'':24s} {'attn fwd':>9s} {'share':>6s} {'attn f+b':>9s} {'share':>6s} {'rest fwd':>9s} {'rest f+b':>9s}")
    for name, (af, afb) in attn.items():
        f, fb = rows[name]
        print(f"{name:24s} {af:8.3f}s {af / f:6.0%} {afb:8.3f}s {afb / fb:6.0%} {f - af:8.3f}s {fb - afb:8.3f}s")


if __name__ == "__main__":
    main()
