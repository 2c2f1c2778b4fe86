"""LoRA on the Wan DiT: zero-initialised adapters leave diffusers' output unchanged, the switch restores the base
model, gradients reach the adapters only, merge folds them into the kernels. Tolerance: 2e-5 max abs (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from vggrpo_jax.convert.wan_transformer import from_torch_state_dict
from vggrpo_jax.models.lora import LoRAParam, lora_disabled, lora_modules, merge_lora
from vggrpo_jax.models.wan import WanConfig

diffusers = pytest.importorskip("diffusers")
ATOL = 2e-5
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def setup():
    cfg = WanConfig.tiny22(lora_rank=4, lora_alpha=8.0, remat_policy="full", attention="xla")
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(**cfg.to_diffusers_config()).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cfg.in_channels, 2, 4, 6), dtype=np.float32)
    n = 2 * 2 * 3
    t = np.full((2, n), 500.0, np.float32)
    t[:, :6] = 0.0  # Wan2.2 TI2V: clean first frame
    e = rng.standard_normal((2, 5, cfg.text_dim), dtype=np.float32)
    with torch.no_grad():
        out = ref(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(e), return_dict=False)[0].numpy()
    model = from_torch_state_dict(ref.state_dict(), cfg)  # torch tensors in, adapters initialised (B = 0)
    return cfg, model, (jnp.asarray(x), jnp.asarray(t), jnp.asarray(e)), out


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


def test_adapters_sit_on_attention_projections_in_fp32(setup):
    cfg, model, _, _ = setup
    mods = lora_modules(model)
    assert len(mods) == 8  # q, k, v, out of attn1 and attn2 (one scanned module each)
    lora = nnx.state(model, LoRAParam)
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(lora)}
    assert paths == {f"blocks.attn{i}.to_{m}.lora_{ab}" for i in (1, 2) for m in "qkv" for ab in "ab"} | {
        f"blocks.attn{i}.to_out.lora_{ab}" for i in (1, 2) for ab in "ab"}
    assert all(v.get_value().dtype == jnp.float32 for _, v in nnx.to_flat_state(lora))
    assert all(float(jnp.abs(v.get_value()).max()) == 0 for p, v in nnx.to_flat_state(lora) if p[-1] == "lora_b")


def test_zero_b_equals_base_switch_restores_base_grads_reach_lora_only_and_merge(setup):
    cfg, model, inputs, ref_out = setup
    graphdef, lora, base = nnx.split(model, LoRAParam, ...)

    def forward(lora, base, x, t, e):
        m = nnx.merge(graphdef, lora, base)
        with lora_disabled(m):
            ref = m(x, t, e)  # the reference policy: same weights, adapters off
        return m(x, t, e), ref

    fwd = _compile(forward, lora, base, *inputs)
    out, off = fwd(lora, base, *inputs)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=ATOL, rtol=0)  # B = 0: the base model
    np.testing.assert_allclose(np.asarray(off), ref_out, atol=ATOL, rtol=0)

    # Non-zero adapters change the output; switching them off gives diffusers' output back.
    rng = np.random.default_rng(1)
    lora = jax.tree.map(lambda v: jnp.asarray(0.3 * rng.standard_normal(v.shape), v.dtype), lora)
    out, off = fwd(lora, base, *inputs)
    assert float(np.max(np.abs(np.asarray(out) - ref_out))) > 1e-2
    np.testing.assert_allclose(np.asarray(off), ref_out, atol=ATOL, rtol=0)

    # Gradients: differentiate w.r.t. the LoRA pytree only (what the optimizer sees); every adapter gets one.
    def loss(lora, base, x, t, e):
        y = nnx.merge(graphdef, lora, base)(x, t, e)
        return jnp.mean(jnp.square(y))

    grads = _compile(jax.grad(loss), lora, base, *inputs)(lora, base, *inputs)
    assert jax.tree.structure(grads) == jax.tree.structure(lora)
    for path, g in nnx.to_flat_state(grads):
        assert float(jnp.abs(g.get_value()).max()) > 0, path
    # Against a finite difference along a random direction (fp32, so a loose 2% relative tolerance).
    direction = jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), v.dtype), lora)
    eps = 1e-3

    def f(lora):  # the loss from the compiled forward (no extra compilation)
        return float(np.mean(np.square(np.asarray(fwd(lora, base, *inputs)[0], np.float64))))

    fd = (f(jax.tree.map(lambda a, d: a + eps * d, lora, direction))
          - f(jax.tree.map(lambda a, d: a - eps * d, lora, direction))) / (2 * eps)
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert abs(fd - analytic) <= 0.02 * abs(analytic) + 1e-6, (fd, analytic)

    # Merge for export: kernels absorb the adapters, lora_b is zeroed, the function is unchanged.
    adapted, _ = fwd(lora, base, *inputs)
    m = nnx.merge(graphdef, lora, base)
    merge_lora(m)
    _, lora2, base2 = nnx.split(m, LoRAParam, ...)
    assert all(float(jnp.abs(v.get_value()).max()) == 0 for p, v in nnx.to_flat_state(lora2) if p[-1] == "lora_b")
    merged, _ = fwd(lora2, base2, *inputs)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(adapted), atol=ATOL, rtol=0)
