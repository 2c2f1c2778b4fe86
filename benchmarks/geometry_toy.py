"""Toy geometry model sizing: one training step (forward + backward + AdamW, the job's real loss) per preset width.

    python benchmarks/geometry_toy.py [--presets xs,s,m] [--batch 4] [--steps 5]

Prints parameters, compile time, ms/step and clips/s for B clips × 5 views × 56×56 on this machine, side by side,
with each preset's throughput relative to the first. configs/geometry_toy.py uses "xs" (measured on the shared
2-core machine under load ≈ 12: xs 1.4 s/step, s 3.2 s/step, m 3.7 s/step at B = 4).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax
from flax import nnx

from vggrpo_jax.data.toyworld import ToyworldConfig, render_clip
from vggrpo_jax.geometry_model.job import init_model
from vggrpo_jax.geometry_model.losses import LossWeights, geometry_loss
from vggrpo_jax.geometry_model.targets import make_targets
from vggrpo_jax.models.any4d import Any4DConfig

PRESETS = {
    "xs": dict(encoder_dim=96, encoder_depth=2, encoder_heads=3, pos_grid=4, trunk_dim=96, trunk_depth=4,
               trunk_heads=4, tap_layers=(1, 2), dpt_feature_dim=32, dpt_layer_dims=(16, 32, 64, 96),
               pose_head_dim=128, scale_hidden_dim=64),
    "s": dict(encoder_dim=192, encoder_depth=3, encoder_heads=3, pos_grid=4, trunk_dim=128, trunk_depth=4,
              trunk_heads=4, tap_layers=(1, 2), dpt_feature_dim=48, dpt_layer_dims=(24, 48, 96, 128),
              pose_head_dim=192, scale_hidden_dim=64),
    "m": dict(encoder_dim=256, encoder_depth=4, encoder_heads=4, pos_grid=4, trunk_dim=192, trunk_depth=6,
              trunk_heads=6, tap_layers=(2, 4), dpt_feature_dim=64, dpt_layer_dims=(32, 64, 128, 192),
              pose_head_dim=256, scale_hidden_dim=96),
}


def batch(b: int) -> dict:
    clips = [render_clip(s, config=ToyworldConfig(num_frames=17, height=56, width=56, dynamic_prob=1.0))
             for s in range(b)]
    frames = np.arange(0, 17, 4)
    vel = lambda c: np.where((c["object_id"][0] >= 0)[..., None], c["scene_flow_per_view"][0], 0.0)  # noqa: E731
    return dict(video=np.stack([(c["video"][frames] * 255).astype(np.uint8) for c in clips]),
                depth_z=np.stack([c["depth"][frames] for c in clips]), velocity0=np.stack([vel(c) for c in clips]),
                c2w=np.stack([c["c2w"][frames] for c in clips]), intrinsics=np.stack([c["intrinsics"][0] for c in clips]),
                frame_offsets=np.tile(frames.astype(np.float32), (b, 1)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", default="xs,s,m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    data = batch(a.batch)
    rows = []
    for name in a.presets.split(","):
        graphdef, params = nnx.split(init_model(Any4DConfig(**PRESETS[name]), 0))
        tx = optax.adamw(1e-3)
        state = (params, tx.init(params))

        @jax.jit
        def step(state, data):
            tgt = make_targets(**data)
            loss_fn = lambda p: geometry_loss(nnx.merge(graphdef, p)(tgt.images), tgt, LossWeights())[0]  # noqa: E731
            loss, g = jax.value_and_grad(loss_fn)(state[0])
            u, o = tx.update(g, state[1], state[0])
            return (optax.apply_updates(state[0], u), o), loss

        t = time.perf_counter()
        state, loss = step(state, data)
        loss.block_until_ready()
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(a.steps):
            state, loss = step(state, data)
        loss.block_until_ready()
        dt = (time.perf_counter() - t) / a.steps
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        rows.append((name, n, compile_s, dt))
    base = a.batch / rows[0][3]
    for name, n, compile_s, dt in rows:
        cps = a.batch / dt
        print(f"{name:3s} {n / 1e6:5.2f} M params  compile {compile_s:5.1f} s  {dt * 1e3:7.0f} ms/step  "
              f"{cps:5.2f} clips/s  ({cps / base:.2f}× {rows[0][0]})")


if __name__ == "__main__":
    main()
