"""Any4D speed (jitted JAX vs the PyTorch reference, this CPU) and full-size AOT memory / FLOPs.

    python benchmarks/any4d.py                      # tiny-width model, several views, JAX vs PyTorch, ratio
    python benchmarks/any4d.py --aot [--depth 24]   # full-size, 21 views at 336×518, 8 simulated devices

The speed run times one forward of the same weights (converted through `convert.any4d`) on identical inputs.
The AOT run lowers and compiles `Any4D.__call__` for abstract, sharded parameters on an 8-device mesh
(views and tokens over all devices, FSDP weights) and prints per-device memory and FLOPs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--aot" in sys.argv:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.models.any4d import Any4D, Any4DConfig


def aot_compile(config: Any4DConfig, views: int, hw: tuple[int, int], mesh_config=None, batch: int = 1):
    """Lowers and compiles a full forward for abstract sharded params; returns (lowered, compiled, seconds)."""
    from vggrpo_jax.parallel import abstract_state_shardings, make_mesh

    mesh = make_mesh(mesh_config or {"fsdp": -1})
    abstract = nnx.eval_shape(lambda: Any4D(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shardings = abstract_state_shardings(state, mesh)
    state_in = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s)),
        state, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))
    images = jax.ShapeDtypeStruct((batch, views, 3) + tuple(hw), jnp.float32,
                                  sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    t = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = jax.jit(forward).lower(state_in, images)
        compiled = lowered.compile()
    return lowered, compiled, time.perf_counter() - t


def _flops(analysis) -> float:
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float((analysis or {}).get("flops", float("nan")))


def report_aot(lowered, compiled, seconds: float) -> dict:
    mem = compiled.memory_analysis()
    gib = 1024**3
    out = dict(
        compile_s=seconds,
        argument_gib=mem.argument_size_in_bytes / gib,
        output_gib=mem.output_size_in_bytes / gib,
        temp_gib=mem.temp_size_in_bytes / gib,
        flops_per_device=_flops(compiled.cost_analysis()),
        flops_total_unpartitioned=_flops(lowered.cost_analysis()),
    )
    return out


def speed(views: int, hw: tuple[int, int], repeats: int) -> None:
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from any4d_reference import ReferenceAny4D
    from vggrpo_jax.convert.any4d import from_torch_state_dict

    # A "small real" config: the released trunk layout at reduced width / depth (CPU-sized).
    cfg = Any4DConfig.tiny(encoder_depth=4, trunk_depth=8, trunk_dim=128, trunk_heads=4, tap_layers=(3, 5),
                           dpt_feature_dim=64, dpt_layer_dims=(32, 64, 128, 256), pos_grid=8)
    ref = ReferenceAny4D(cfg, seed=0)
    abstract = nnx.eval_shape(lambda: Any4D(cfg, rngs=nnx.Rngs(0)))
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    model = nnx.merge(graphdef, from_torch_state_dict({k: v.numpy() for k, v in ref.state_dict_any4d().items()},
                                                      cfg), rest)
    images = np.random.default_rng(0).uniform(0, 1, (1, views, 3) + hw).astype(np.float32)
    fwd = nnx.jit(lambda m, x: m(x))
    x = jnp.asarray(images)
    t = time.perf_counter()
    jax.block_until_ready(fwd(model, x))
    compile_s = time.perf_counter() - t
    jax_times, torch_times = [], []
    timg = torch.from_numpy(images)
    with torch.no_grad():
        ref(timg)
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fwd(model, x))
        jax_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = ref(timg)
        torch_times.append(time.perf_counter() - t)
    err = float(np.abs(np.asarray(out.pts3d) - r["pts3d"]).max())
    j, p = min(jax_times), min(torch_times)
    print(f"Any4D forward, {views} views at {hw[0]}x{hw[1]}, trunk {cfg.trunk_depth}x{cfg.trunk_dim}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  JAX (jit, first call incl. compile {compile_s:.1f}s): {j * 1e3:.1f} ms   PyTorch: {p * 1e3:.1f} ms   "
          f"ratio torch/jax = {p / j:.2f}x   (pts3d max abs diff {err:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aot", action="store_true")
    parser.add_argument("--depth", type=int, default=24, help="trunk depth for --aot (DINOv2 depth follows)")
    parser.add_argument("--views", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="--aot with the bf16 trunk")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.aot:
        cfg = Any4DConfig.full(trunk_depth=args.depth, encoder_depth=args.depth,
                               tap_layers=(11, 17) if args.depth == 24 else (args.depth // 2 - 1, args.depth - 2),
                               dtype=jnp.bfloat16 if args.bf16 else jnp.float32)
        views = args.views or 21
        r = report_aot(*aot_compile(cfg, views, (336, 518)))
        print(f"Any4D AOT: {views} views 336x518, depth {args.depth}, {'bf16' if args.bf16 else 'fp32'} trunk, "
              f"8 devices (fsdp=8)")
        for k, v in r.items():
            print(f"  {k}: {v:.4g}")
    else:
        speed(args.views or 4, (140, 210), args.repeats)


if __name__ == "__main__":
    main()
