"""The Wan DiT on a 2×4 simulated mesh (fsdp × tensor, and fsdp × context for sequence sharding) equals the
single-device result (max abs error <= 2e-5, fp32); weights are placed at their shardings by the converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vggrpo_jax import parallel as par
from vggrpo_jax.convert.wan_transformer import from_torch_state_dict
from vggrpo_jax.models.wan import WanConfig

diffusers = pytest.importorskip("diffusers")
ATOL = 2e-5
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def setup():
    # 4 heads and 64 tokens (grid 4×4×4), so heads split over "tensor" and tokens over "context".
    cfg = WanConfig.tiny22(num_attention_heads=4, ffn_dim=64, lora_rank=2, attention="auto",
                           attention_block_q=8, attention_block_kv=16)
    torch.manual_seed(0)
    sd = diffusers.WanTransformer3DModel(**cfg.to_diffusers_config()).state_dict()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cfg.in_channels, 4, 8, 8), dtype=np.float32)
    t = np.full((2, 64), 700.0, np.float32)
    t[:, :16] = 0.0
    e = rng.standard_normal((2, 6, cfg.text_dim), dtype=np.float32)
    model = from_torch_state_dict(sd, cfg)
    graphdef, state = nnx.split(model)
    single = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, x, t, e).compile(FAST_COMPILE)
    return cfg, sd, (x, t, e), np.asarray(single(state, x, t, e))


@pytest.mark.parametrize("axes", [{"fsdp": 2, "tensor": 4}, {"fsdp": 2, "context": 4}], ids=["fsdp_tensor", "fsdp_context"])
def test_sharded_forward_equals_single_device(setup, axes):
    cfg, sd, inputs, expected = setup
    mesh = par.make_mesh(axes)
    model = from_torch_state_dict(sd, cfg, mesh=mesh)
    graphdef, state = nnx.split(model)
    kernel = state["blocks"]["attn1"]["to_q"]["kernel"].get_value()
    assert kernel.sharding.spec == (P(None, "fsdp", "tensor") if "tensor" in axes else P(None, "fsdp", None))
    x, t, e = par.shard_batch(inputs, mesh)
    if "context" in axes:  # per-token timesteps follow the tokens
        t = jax.device_put(t, NamedSharding(mesh, P("fsdp", "context")))

    def fwd(state, x, t, e):
        return nnx.merge(graphdef, state)(x, t, e)

    with jax.set_mesh(mesh):
        compiled = jax.jit(fwd).lower(state, x, t, e).compile(FAST_COMPILE)
        out = compiled(state, x, t, e)
        text = compiled.as_text()
    assert "all-gather" in text or "all-reduce" in text  # the program really is partitioned
    err = float(np.max(np.abs(np.asarray(out) - expected)))
    assert err <= ATOL, f"{axes}: max abs error {err}"
