"""Time of one GRPO iteration split into rollout / reward / update, at a tiny config on CPU.

    python benchmarks/grpo_step.py                  # tiny WanTransformer (2 layers, LoRA r4 on attention q/k/v/o)
    python benchmarks/grpo_step.py --model mlp      # a small MLP velocity model with a LoRA-style adapter
    python benchmarks/grpo_step.py --steps 20 --prompts 2 --k 4 --iters 5 --micro 2
    python benchmarks/grpo_step.py --aot            # Wan2.1-T2V-1.3B GRPO update + rollout, Flow-GRPO's Wan shapes,
                                                    # compiled abstractly on an 8-device simulated mesh (pure FSDP):
                                                    # per-device memory and XLA FLOPs

Each phase is jitted once (its compile time is printed separately) and then timed over --iters iterations with
block_until_ready. The reward is a cheap analytic latent reward (distance of z0 to a per-prompt target), standing in
for the LGM rewards, so "reward" measures the advantage bookkeeping rather than a geometry model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--aot" in sys.argv and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from vggrpo_jax.rewards import group_advantages  # noqa: E402
from vggrpo_jax.training import OptimConfig, make_optimizer  # noqa: E402
from vggrpo_jax.rl import (  # noqa: E402
    GrpoConfig,
    UpdateConfig,
    init_train_state,
    make_noise_rule,
    make_train_step,
    rollout,
    wan_sigmas,
)


def wan_model(args):
    from vggrpo_jax.models.lora import LoRAParam, lora_disabled
    from vggrpo_jax.models.wan import WanConfig, WanTransformer

    cfg = WanConfig(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, text_dim=32,
                    freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=64, lora_rank=4, attention="xla")
    model = WanTransformer(cfg, nnx.Rngs(0))
    graphdef, lora, frozen = nnx.split(model, LoRAParam, ...)

    def policy_fn(trainable, frozen, x, t, text):
        return nnx.merge(graphdef, trainable, frozen)(x, t, text)

    def reference_fn(trainable, frozen, x, t, text):
        m = nnx.merge(graphdef, trainable, frozen)
        with lora_disabled(m):
            return m(x, t, text)

    latent = (cfg.in_channels, 3, 8, 8)  # (C, F, H, W)
    text_shape = (8, cfg.text_dim)       # (L, text_dim)
    return policy_fn, reference_fn, lora, frozen, latent, text_shape


def mlp_model(args):
    dim, hidden, rank, tdim = 64, 128, 4, 16
    rng = np.random.default_rng(0)
    frozen = {"w1": jnp.asarray(rng.standard_normal((dim + tdim + 1, hidden)) / 9, jnp.float32),
              "w2": jnp.asarray(rng.standard_normal((hidden, dim)) / 11, jnp.float32)}
    lora = {"a": jnp.asarray(rng.standard_normal((dim + tdim + 1, rank)) / 9, jnp.float32),
            "b": jnp.zeros((rank, hidden), jnp.float32)}

    def net(trainable, frozen, x, t, text, adapters):
        h_in = jnp.concatenate([x, text.mean(1), (t.astype(jnp.float32) / 1000)[:, None]], axis=1)
        h = h_in @ frozen["w1"]
        if adapters:
            h = h + (h_in @ trainable["a"]) @ trainable["b"]
        return jax.nn.gelu(h) @ frozen["w2"]

    policy_fn = lambda tr, fr, x, t, c: net(tr, fr, x, t, c, True)  # noqa: E731
    reference_fn = lambda tr, fr, x, t, c: net(tr, fr, x, t, c, False)  # noqa: E731
    return policy_fn, reference_fn, lora, frozen, (dim,), (4, tdim)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def aot(args) -> None:
    """Abstract lower+compile of the GRPO update and the rollout of Wan2.1-T2V-1.3B with LoRA r32/α64 on q/k/v/o."""
    from vggrpo_jax.models.lora import LoRAParam, lora_disabled
    from vggrpo_jax.models.wan import WanConfig, WanTransformer
    from vggrpo_jax.parallel import abstract_state_shardings, make_mesh
    from vggrpo_jax.rl.rollout import Trajectory
    from vggrpo_jax.rl.sharding import batch_leading_sharding, replicated_sharding, trajectory_sharding

    mesh = make_mesh({"fsdp": -1})
    cfg = WanConfig(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, lora_rank=32, lora_alpha=64.0,
                    remat_policy=args.remat, attention="xla")
    graphdef, lora, frozen = nnx.split(nnx.eval_shape(lambda: WanTransformer(cfg, nnx.Rngs(0))), LoRAParam, ...)

    def sds(tree, shardings):
        def one(v, s):
            s = s.get_value() if isinstance(s, nnx.Variable) else s
            if isinstance(v, nnx.Variable):
                x = v.get_value()
                return v.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s))
            return jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)

        return jax.tree.map(one, tree, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))

    frozen = sds(frozen, abstract_state_shardings(frozen, mesh))
    lora_sh = abstract_state_shardings(lora, mesh)
    lora = sds(lora, lora_sh)

    def policy_fn(tr, fr, x, t, c):
        return nnx.merge(graphdef, tr, fr)(x, t, c)

    def reference_fn(tr, fr, x, t, c):
        m = nnx.merge(graphdef, tr, fr)
        with lora_disabled(m):
            return m(x, t, c)

    b, n_steps = args.prompts * args.k, args.steps
    latent = (cfg.in_channels, 9, 30, 52)  # 33 frames at 240x416 -> 16x9x30x52 (Flow-GRPO's Wan setting)
    sigmas = wan_sigmas(n_steps)
    rule = make_noise_rule("flow_grpo_wan", sigmas)
    gcfg = GrpoConfig(noise_rule=rule, clip_eps=1e-3, beta=0.004, cfg_scale=4.5)
    opt = make_optimizer(OptimConfig(lr=1e-4, weight_decay=1e-4))
    state = jax.eval_shape(lambda p: init_train_state(p, opt), lora)
    state = sds(state, replicated_sharding(state, mesh))
    traj = jax.eval_shape(lambda: Trajectory(
        latents=jnp.zeros((n_steps + 1, b) + latent), log_probs=jnp.zeros((n_steps, b)),
        sigmas=jnp.zeros((n_steps + 1,)), timesteps=jnp.zeros((n_steps,), jnp.int32),
        sde_mask=jnp.zeros((n_steps,), bool), train_steps=jnp.zeros((int(n_steps * 0.99),), jnp.int32)))
    traj = sds(traj, trajectory_sharding(traj, mesh))
    text = jax.ShapeDtypeStruct((b, 512, cfg.text_dim), jnp.bfloat16)
    text = sds(text, batch_leading_sharding(text, mesh))
    uncond = jax.ShapeDtypeStruct((1, 512, cfg.text_dim), jnp.bfloat16)
    uncond = sds(uncond, replicated_sharding(uncond, mesh))
    adv = sds(jax.ShapeDtypeStruct((b,), jnp.float32), batch_leading_sharding(jax.ShapeDtypeStruct((b,), jnp.float32),
                                                                              mesh))
    x_init = jax.ShapeDtypeStruct((b,) + latent, jnp.float32)
    x_init = sds(x_init, batch_leading_sharding(x_init, mesh))
    n_lora = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(lora))
    n_frozen = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(frozen))
    tokens = 9 * 15 * 26
    print(f"Wan2.1-1.3B GRPO AOT: frozen {n_frozen / 1e9:.2f}B bf16, LoRA {n_lora / 1e6:.1f}M fp32, batch {b} "
          f"(CFG -> {2 * b} rows of {tokens} tokens), {n_steps} steps ({int(n_steps * 0.99)} trained), "
          f"micro-batches {args.micro}, remat {args.remat}, mesh {dict(mesh.shape)}")

    train_step = make_train_step(policy_fn, reference_fn, opt, gcfg, UpdateConfig(num_micro_batches=args.micro),
                                 jit=False)

    def do_rollout(params, fr, key, x, c, u):
        vel = lambda xx, t, tx: policy_fn(params, fr, xx, t, tx)  # noqa: E731
        return rollout(vel, x, sigmas, key, noise_rule=rule, cond=c, uncond=u, cfg_scale=4.5)

    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    for name, fn, inputs in (
        ("update", train_step, (state, frozen, traj, adv, text, uncond)),
        ("rollout", do_rollout, (lora, frozen, key, x_init, text, uncond)),
    ):
        t0 = time.time()
        with jax.set_mesh(mesh):
            compiled = jax.jit(fn).lower(*inputs).compile()
        mem = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        print(f"  {name}: lower+compile {time.time() - t0:.0f}s; per device: arguments "
              f"{_gib(mem.argument_size_in_bytes)}, outputs {_gib(mem.output_size_in_bytes)}, temporaries "
              f"{_gib(mem.temp_size_in_bytes)}; XLA flops {flops / 1e12:.2f} TFLOP (loop bodies counted once)")
    if jax.devices()[0].platform == "cpu":
        print("  note: the CPU backend upcasts bf16 matmuls to f32, so temporaries overstate an accelerator's")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=("wan", "mlp"), default="wan")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per rollout")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--k", type=int, default=4, help="samples per prompt")
    p.add_argument("--micro", type=int, default=1, help="micro-batches per update")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--aot", action="store_true", help="full-size Wan2.1-1.3B abstract compile (see module doc)")
    p.add_argument("--remat", default="full", help="remat policy of the DiT for --aot")
    args = p.parse_args()
    if args.aot:
        if "--prompts" not in sys.argv and "--k" not in sys.argv:
            args.prompts, args.k = 2, 4  # 8 samples: one per device
        if "--steps" not in sys.argv:
            args.steps = 20
        return aot(args)

    policy_fn, reference_fn, lora, frozen, latent, text_shape = (wan_model if args.model == "wan" else mlp_model)(args)
    b = args.prompts * args.k
    sigmas = wan_sigmas(args.steps)
    rule = make_noise_rule("flow_grpo_wan", sigmas)
    cfg = GrpoConfig(noise_rule=rule, clip_eps=1e-3, beta=0.004, cfg_scale=4.5)
    opt = make_optimizer(OptimConfig(lr=1e-4, weight_decay=1e-4))
    update = UpdateConfig(num_micro_batches=args.micro)
    train_step = make_train_step(policy_fn, reference_fn, opt, cfg, update)
    state = init_train_state(lora, opt)

    rng = np.random.default_rng(1)
    prompts = rng.standard_normal((args.prompts,) + text_shape).astype(np.float32)
    cond = jnp.asarray(np.repeat(prompts, args.k, axis=0))
    uncond = jnp.zeros((1,) + text_shape, jnp.float32)
    targets = jnp.asarray(np.repeat(rng.standard_normal((args.prompts,) + latent), args.k, axis=0), jnp.float32)

    @jax.jit
    def do_rollout(params, frozen, key, cond, uncond):
        x_init = jax.random.normal(jax.random.fold_in(key, 1 << 20), (b,) + latent)
        vel = lambda x, t, text: policy_fn(params, frozen, x, t, text)  # noqa: E731
        return rollout(vel, x_init, sigmas, key, noise_rule=rule, cond=cond, uncond=uncond, cfg_scale=cfg.cfg_scale)

    @jax.jit
    def do_reward(z0):
        r = -jnp.sqrt(jnp.mean((z0 - targets).reshape(b, -1) ** 2, axis=1)).reshape(args.prompts, args.k)
        return r, group_advantages({"latent_distance": r}).reshape(b)

    def timed(fn, *a):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*a))
        return out, time.perf_counter() - t0

    n_lora = sum(x.size for x in jax.tree.leaves(lora))
    n_frozen = sum(x.size for x in jax.tree.leaves(frozen))
    print(f"model={args.model} trainable={n_lora:,} frozen={n_frozen:,} batch={b} ({args.prompts}x{args.k}) "
          f"latent={latent} steps={args.steps} trained_steps={int(args.steps * 0.99)} micro={args.micro} "
          f"backend={jax.default_backend()}")
    compile_t = {}
    times = {"rollout": [], "reward": [], "update": []}
    for it in range(args.iters + 1):
        key = jax.random.PRNGKey(it)
        traj, t_roll = timed(do_rollout, state.params, frozen, key, cond, uncond)
        (rewards, adv), t_rew = timed(do_reward, traj.z0)
        (state, metrics), t_upd = timed(train_step, state, frozen, traj, adv, cond, uncond, rewards)
        if it == 0:
            compile_t = {"rollout": t_roll, "reward": t_rew, "update": t_upd}
            continue
        times["rollout"].append(t_roll)
        times["reward"].append(t_rew)
        times["update"].append(t_upd)
        print(f"iter {it}: reward {float(jnp.mean(rewards)):+.4f} loss {float(metrics['loss']):+.5f} "
              f"kl {float(metrics['kl']):.2e} ratio [{float(metrics['ratio_min']):.6f}, "
              f"{float(metrics['ratio_max']):.6f}] grad_norm {float(metrics['grad_norm']):.3e} "
              f"skipped {int(metrics['skipped'])}")
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    total = sum(mean.values())
    print(f"first call (compile + run): " + ", ".join(f"{k} {v:.2f}s" for k, v in compile_t.items()))
    print(f"{'phase':<8} {'ms/iter':>10} {'share':>7}")
    for k, v in mean.items():
        print(f"{k:<8} {1e3 * v:>10.1f} {100 * v / total:>6.1f}%")
    print(f"{'total':<8} {1e3 * total:>10.1f}   update/rollout = {mean['update'] / mean['rollout']:.2f}x")


if __name__ == "__main__":
    main()
