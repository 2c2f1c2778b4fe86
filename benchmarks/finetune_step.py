"""Flow-matching fine-tuning step of the toy DiT (configs/dit_toy.py sizes): ms/step and samples/s on this machine.

    python benchmarks/finetune_step.py [--batch 16] [--steps 10] [--channels 16] [--text_len 64]

One step = σ and noise draw, DiT forward + backward on B latents of (C, 5, 8, 8) (17×64×64 clips through an 8×
VAE) with text (B, L, 32), AdamW update — the job's `train_step` without data loading.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.sft.flow_matching import FlowMatchingConfig, flow_matching_loss, noisy_latents, sample_sigmas


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--text_len", type=int, default=64)
    a = p.parse_args()
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("cfg", "configs/dit_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    cfg = WanConfig.preset(c.dit.preset, text_dim=c.text.toy_dim, in_channels=a.channels, out_channels=a.channels,
                           **dict(c.dit.arch))
    graphdef, params = nnx.split(WanTransformer(cfg, nnx.Rngs(0)), nnx.Param)
    tx = optax.adamw(1e-3)
    fm = FlowMatchingConfig(**dict(c.finetune.flow))
    x0 = jax.random.normal(jax.random.key(1), (a.batch, a.channels, 5, 8, 8))
    emb = jax.random.normal(jax.random.key(2), (a.batch, a.text_len, c.text.toy_dim))

    @jax.jit
    def step(state, key):
        def loss_fn(p):
            k1, k2 = jax.random.split(key)
            s, t = sample_sigmas(k1, a.batch, fm)
            xt, v = noisy_latents(x0, jax.random.normal(k2, x0.shape), s)
            return flow_matching_loss(nnx.merge(graphdef, p)(xt, t, emb), v)[0]

        loss, g = jax.value_and_grad(loss_fn)(state[0])
        u, o = tx.update(g, state[1], state[0])
        return (optax.apply_updates(state[0], u), o), loss

    state = (params, tx.init(params))
    t0 = time.perf_counter()
    state, loss = step(state, jax.random.key(0))
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(a.steps):
        state, loss = step(state, jax.random.key(i + 1))
    loss.block_until_ready()
    dt = (time.perf_counter() - t0) / a.steps
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    print(f"toy DiT {n / 1e6:.3f} M params, dim {cfg.dim}, {cfg.num_layers} layers: compile {compile_s:.1f} s, "
          f"{dt * 1e3:.1f} ms/step, {a.batch / dt:.0f} samples/s (B={a.batch}, latents {a.channels}×5×8×8)")


if __name__ == "__main__":
    main()
