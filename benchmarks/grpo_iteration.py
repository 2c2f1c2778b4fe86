"""Time of one real GRPO iteration (trainer.GRPOTrainer) split into rollout / LGM rewards / update, toy config, CPU.

    python benchmarks/grpo_iteration.py [--iters 5] [--steps 8] [--prompts 2] [--k 4]

Unlike benchmarks/grpo_step.py (analytic stand-in reward), this runs the stages training runs: the tiny Wan DiT with
LoRA under CFG, the LGM (tiny Any4D tail + a connector at ℓ = 2, untrained: its cost does not depend on its fit) with
r_motion and leave-one-out r_geo, group advantages, and the GRPO update with the adapters-off reference. Each stage
is compiled once (compile time printed), then timed over --iters iterations with block_until_ready.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="denoising steps per rollout")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--k", type=int, default=4)
    args = p.parse_args()

    from vggrpo_jax import backbones as build
    from vggrpo_jax import parallel
    from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
    from vggrpo_jax.lgm.model import LatentGeometryModel
    from vggrpo_jax.grpo.trainer import GRPOTrainer, latent_shape

    sys.path.insert(0, os.path.join(ROOT, "configs"))
    from lgm_toy import get_config as lgm_config
    from toy_random import get_config as toy_config

    c = toy_config()
    c.rl.num_steps, c.rl.prompts_per_batch, c.rl.group_size = args.steps, args.prompts, args.k
    lc = lgm_config()
    mesh = parallel.make_mesh(c.mesh)
    vae, any4d = build.build_vae(lc), build.build_any4d(lc)
    lgm = LatentGeometryModel(build_connector(ConnectorConfig(), latent_channels=int(vae.config.z_dim),
                                              any4d_config=any4d.config, stitch_layer=2), any4d)
    shape = latent_shape(c, vae.config, int(vae.config.z_dim))
    text_dim = 32
    policy = build.build_policy(c, mesh, text_dim, shape[0])
    graphdef, state = nnx.split(lgm)
    trainer = GRPOTrainer(c, policy, graphdef, parallel.place_state(state, mesh), shape, mesh)
    b = args.prompts * args.k
    rng = np.random.default_rng(0)
    cond = parallel.shard_batch(rng.standard_normal((b, int(c.text.max_length), text_dim)).astype(np.float32), mesh)
    uncond = parallel.replicate(np.zeros((1, int(c.text.max_length), text_dim), np.float32), mesh)
    train_state = trainer.init_state()

    def block(x):
        return jax.block_until_ready(x)

    times = {"rollout": [], "rewards": [], "update": []}
    compile_s = {}
    with jax.set_mesh(mesh):
        for i in range(args.iters + 1):
            key = jax.random.key(i)
            t0 = time.perf_counter()
            traj = block(trainer._rollout(train_state.params, policy.frozen, cond, uncond, key))
            t1 = time.perf_counter()
            adv, raw, _ = block(trainer._rewards(trainer.lgm_state, traj.z0))
            t2 = time.perf_counter()
            train_state, _ = block(trainer._train_step(train_state, policy.frozen, traj, adv, {"emb": cond},
                                                       {"emb": uncond}, raw))
            t3 = time.perf_counter()
            if i == 0:  # first call = compile + run
                compile_s = {"rollout": t1 - t0, "rewards": t2 - t1, "update": t3 - t2}
                continue
            for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[name].append(dt)
    total = sum(np.median(v) for v in times.values())
    print(f"toy GRPO iteration: batch {b} (P={args.prompts} × K={args.k}), latent {list(shape)}, {args.steps} steps, "
          f"{jax.device_count()} device(s)")
    print(f"{'stage':8s} {'first call s':>13s} {'median s':>9s} {'share':>6s}")
    for name, v in times.items():
        med = float(np.median(v))
        print(f"{name:8s} {compile_s[name]:13.2f} {med:9.3f} {med / total:6.1%}")
    print(f"{'total':8s} {sum(compile_s.values()):13.2f} {total:9.3f}")


if __name__ == "__main__":
    main()
