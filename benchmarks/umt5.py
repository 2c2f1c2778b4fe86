"""UMT5 encoder: speed side by side with transformers at a small config, and an AOT compile of the full UMT5-XXL.

    python benchmarks/umt5.py                 # JAX vs transformers (CPU, fp32), prints the ratio
    python benchmarks/umt5.py --aot           # UMT5-XXL, batch 8 x 512 tokens, bf16, lowered+compiled abstractly on
                                              # an 8-device simulated mesh (pure FSDP); per-device memory and FLOPs
    python benchmarks/umt5.py --aot --mesh fsdp=4,tensor=2

The AOT run builds nothing in memory: the model is nnx.eval_shape'd, every parameter gets the sharding its logical
axes ask for, and jax.jit(...).lower(ShapeDtypeStructs).compile() reports XLA's memory and cost analysis.
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

from vggrpo_jax.convert import umt5 as conv  # noqa: E402
from vggrpo_jax.models.umt5 import umt5_xxl  # noqa: E402
from vggrpo_jax.parallel import abstract_state_shardings, batch_sharding, make_mesh  # noqa: E402


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def aot(batch: int, length: int, mesh_spec: str) -> None:
    sizes = dict((k, int(v)) for k, v in (kv.split("=") for kv in mesh_spec.split(","))) if mesh_spec else None
    mesh = make_mesh(sizes)
    cfg = umt5_xxl(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    graphdef, abstract_state = nnx.split(conv.abstract_encoder(cfg))
    shardings = abstract_state_shardings(abstract_state, mesh)
    state = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s)),
        abstract_state,
        shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    n_params = sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(abstract_state))
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=batch_sharding(mesh, 2))

    def forward(s, ids, mask):
        return nnx.merge(graphdef, s)(ids, mask)

    t0 = time.time()
    with jax.set_mesh(mesh):
        lowered = jax.jit(forward).lower(state, tokens, tokens)
        compiled = lowered.compile()
    seconds = time.time() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    d, inner, f, layers = cfg.d_model, cfg.inner_dim, cfg.d_ff, cfg.num_layers
    tokens_total = batch * length
    matmul = 2 * tokens_total * layers * (4 * d * inner + 3 * d * f)
    attention = 2 * 2 * batch * cfg.num_heads * length * length * cfg.d_kv * layers
    analytic = (matmul + attention) / mesh.size
    print(f"UMT5-XXL AOT: {n_params / 1e9:.2f}B params, batch {batch} x {length} tokens, bf16, mesh {dict(mesh.shape)}"
          f" on {jax.devices()[0].platform}")
    print(f"  lower+compile {seconds:.1f}s")
    print(f"  per device: arguments {_gib(mem.argument_size_in_bytes)}, outputs {_gib(mem.output_size_in_bytes)}, "
          f"temporaries {_gib(mem.temp_size_in_bytes)}")
    print(f"  per device: analytic {analytic / 1e12:.2f} TFLOP (matmuls + attention); XLA cost analysis "
          f"{flops / 1e12:.3f} TFLOP for the program, which counts the scanned layer body once "
          f"(x {layers} layers = {flops * layers / 1e12:.2f} TFLOP)")
    if jax.devices()[0].platform == "cpu":
        print("  note: the CPU backend upcasts bf16 matmuls to f32 (the per-layer weight all-gathers are f32), so "
              "temporaries overstate an accelerator's")


def speed(batch: int, length: int, repeats: int) -> None:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    torch.manual_seed(0)
    hf_cfg = transformers.UMT5Config(
        vocab_size=1000, d_model=256, d_kv=64, d_ff=640, num_layers=4, num_heads=4, dropout_rate=0.0
    )
    ref = transformers.UMT5EncoderModel(hf_cfg).eval()
    cfg = conv.UMT5Config.from_hf_config(hf_cfg.to_dict())
    model = conv.from_torch_state_dict(ref.state_dict(), cfg)
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 1000, (batch, length))
    mask = np.ones_like(ids)
    mask[:, length // 3 :] = 0
    ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    out = fn(state, ids_j, mask_j).block_until_ready()
    with torch.no_grad():
        expected = ref(ids_t, mask_t).last_hidden_state.numpy()
        ref(ids_t, mask_t)
    err = float(np.abs(np.asarray(out) - expected).max())

    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(state, ids_j, mask_j).block_until_ready()
    t_jax = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            ref(ids_t, mask_t)
    t_torch = (time.perf_counter() - t0) / repeats
    print(f"UMT5 d_model 256, 4 layers, batch {batch} x {length}, fp32 on {jax.devices()[0].platform}: "
          f"jax {t_jax * 1e3:.1f} ms, transformers {t_torch * 1e3:.1f} ms, ratio torch/jax {t_torch / t_jax:.2f}, "
          f"max abs diff {err:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aot", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--mesh", default="", help="e.g. fsdp=8 or fsdp=4,tensor=2 (default: all devices on fsdp)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.aot:
        aot(args.batch or 8, args.length, args.mesh)
    else:
        speed(args.batch or 4, args.length, args.repeats)


if __name__ == "__main__":
    main()
