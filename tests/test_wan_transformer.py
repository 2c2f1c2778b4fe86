"""Parity of the Wan DiT against diffusers' WanTransformer3DModel (tiny random configs, fp32), weights brought in
through our converter from a real sharded safetensors checkpoint; original-Wan key names; strict checkpoint errors.

Tolerance: max abs error <= 2e-5 (fp32, highest matmul precision) for RoPE, one block and the full model.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from vggrpo_jax.convert.common import CheckpointError, open_state_dict
from vggrpo_jax.convert.wan_transformer import from_torch_state_dict
from vggrpo_jax.models.wan import WanConfig, WanTransformer
from vggrpo_jax.models.wan import attention as attn_lib
from vggrpo_jax.models.wan.rope import rope_tables

diffusers = pytest.importorskip("diffusers")
ATOL = 2e-5

# (B, C, F, H, W) latent, text tokens. Patch (1, 2, 2) → grid (3, 2, 3) = 18 tokens.
LATENT = (2, 3, 4, 6)
TEXT_LEN = 7


def _tiny_diffusers(config: WanConfig, seed: int):
    torch.manual_seed(seed)
    model = diffusers.WanTransformer3DModel(**config.to_diffusers_config()).eval()
    with torch.no_grad():  # perturb everything, so norms' scales and biases are tested too
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _save(model, path) -> str:
    model.save_pretrained(path, safe_serialization=True, max_shard_size="30KB")  # several shards + index json
    return str(path)


def _inputs(config: WanConfig, per_token: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = 2
    x = rng.standard_normal((b, config.in_channels, *LATENT[1:]), dtype=np.float32)
    text = rng.standard_normal((b, TEXT_LEN, config.text_dim), dtype=np.float32)
    grid = (LATENT[1], LATENT[2] // 2, LATENT[3] // 2)
    if per_token:  # Wan2.2 TI2V: the first latent frame is the clean conditioning image (t = 0)
        n = math.prod(grid)
        t = np.tile(np.array([[731.0], [250.5]], np.float32), (1, n))
        t[:, : grid[1] * grid[2]] = 0.0
    else:
        t = np.array([731.0, 250.5], np.float32)
    return x, t, text


# Tiny graphs: XLA's backend optimisations cost more compile time than they save.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


_COMPILED: dict = {}


def _run(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def apply(module, *args):
    """Calls `module` compiled; modules with the same structure share one compilation across the test module."""
    graphdef, state = nnx.split(module)
    args = tuple(jnp.asarray(a) for a in args)
    leaves = jax.tree.leaves((state, args))
    key = (graphdef, jax.tree.structure((state, args)), tuple((x.shape, x.dtype) for x in leaves))
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(_run, static_argnums=0).lower(graphdef, state, *args).compile(FAST_COMPILE)
    return _COMPILED[key](state, *args)


apply_block = apply

FORMS = {
    "wan21": (WanConfig.tiny, False),
    "wan22": (WanConfig.tiny22, True),
}


@pytest.fixture(scope="module", params=sorted(FORMS))
def reference(request, tmp_path_factory):
    make, per_token = FORMS[request.param]
    cfg = make()
    torch_model = _tiny_diffusers(cfg, seed=1 if per_token else 0)
    path = _save(torch_model, tmp_path_factory.mktemp(request.param))
    x, t, text = _inputs(cfg, per_token)
    with torch.no_grad():
        out = torch_model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(text), return_dict=False)[0]
    return dict(cfg=cfg, torch=torch_model, path=path, inputs=(x, t, text), out=out.numpy(), name=request.param)


def test_checkpoint_is_sharded_with_index(reference):
    import glob
    import os

    assert glob.glob(os.path.join(reference["path"], "*.safetensors.index.json"))
    assert len(glob.glob(os.path.join(reference["path"], "*.safetensors"))) > 1


def test_rope_matches_diffusers(reference):
    cfg, tm = reference["cfg"], reference["torch"]
    x = torch.zeros((1, cfg.in_channels, *LATENT[1:]))
    cos_ref, sin_ref = tm.rope(x)  # (1, L, 1, D), each angle repeated for the pair
    cos, sin = rope_tables((LATENT[1], LATENT[2] // 2, LATENT[3] // 2), cfg.attention_head_dim, cfg.rope_max_seq_len)
    np.testing.assert_allclose(np.asarray(cos), cos_ref[0, :, 0, 0::2].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(sin), sin_ref[0, :, 0, 1::2].numpy(), atol=ATOL, rtol=0)


_KERNEL = {True: dict(attention="blocked", attention_block_q=8, attention_block_kv=4), False: dict(attention="xla")}


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "noscan"])
def test_block_and_full_model_match_diffusers(reference, scan):
    # The scanned model also exercises the blocked kernel (tiles smaller than the 18 tokens, padded); the unrolled
    # one the plain XLA kernel.
    cfg = reference["cfg"].replace(scan_layers=scan, **_KERNEL[scan])
    model = from_torch_state_dict(reference["path"], cfg)
    x, t, text = reference["inputs"]

    # One block, fed diffusers' own intermediate inputs.
    tm = reference["torch"]
    rng = np.random.default_rng(3)
    n = LATENT[1] * (LATENT[2] // 2) * (LATENT[3] // 2)
    h = rng.standard_normal((2, n, cfg.dim), dtype=np.float32)
    ctx = rng.standard_normal((2, TEXT_LEN, cfg.dim), dtype=np.float32)
    temb6 = rng.standard_normal((2, n, 6, cfg.dim) if t.ndim == 2 else (2, 6, cfg.dim), dtype=np.float32)
    rope = tm.rope(torch.zeros((1, cfg.in_channels, *LATENT[1:])))
    with torch.no_grad():
        ref_block = tm.blocks[1](torch.from_numpy(h), torch.from_numpy(ctx), torch.from_numpy(temb6), rope).numpy()
    if scan:
        graphdef, state = nnx.split(model.blocks)
        block = nnx.merge(graphdef, jax.tree.map(lambda a: a[1], state))
    else:
        block = model.blocks[1]
    jrope = rope_tables((LATENT[1], LATENT[2] // 2, LATENT[3] // 2), cfg.attention_head_dim)
    got_block = apply_block(block, jnp.asarray(h), jnp.asarray(ctx), jnp.asarray(temb6), jrope)
    np.testing.assert_allclose(np.asarray(got_block), ref_block, atol=ATOL, rtol=0)

    # Full model, jitted.
    out = apply(model, x, t, text)
    assert out.dtype == jnp.float32 and out.shape == reference["out"].shape
    err = float(np.max(np.abs(np.asarray(out) - reference["out"])))
    assert err <= ATOL, f"{reference['name']} scan={scan}: max abs error {err}"


# ---------------------------------------------------------------------------------------- original Wan names
# Diffusers → original Wan names, written from the public key table (diffusers scripts/convert_wan_to_diffusers.py);
# the test checks it against diffusers' own converter below before using it.
INVERSE = (
    (r"^condition_embedder\.text_embedder\.linear_([12])\.", lambda m: f"text_embedding.{2 * int(m[1]) - 2}."),
    (r"^condition_embedder\.time_embedder\.linear_([12])\.", lambda m: f"time_embedding.{2 * int(m[1]) - 2}."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.o."),
    (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
    (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."),
    (r"\.attn1\.norm_", ".self_attn.norm_"),
    (r"\.attn2\.norm_", ".cross_attn.norm_"),
    (r"\.norm2\.", ".norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"\.scale_shift_table$", ".modulation"),
)


def to_original(key: str) -> str:
    for pattern, repl in INVERSE:
        key = re.sub(pattern, repl, key)
    return key


def test_original_wan_names(reference):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = {k: v.numpy() for k, v in reference["torch"].state_dict().items()}
    original = {to_original(k): v for k, v in sd.items()}
    assert "blocks.0.self_attn.q.weight" in original and "head.modulation" in original
    assert "blocks.1.norm3.weight" in original and "blocks.0.modulation" in original
    # Our inverse table agrees with diffusers' converter (original → diffusers).
    back = convert_wan_transformer_to_diffusers(dict(original))
    assert sorted(back) == sorted(sd)

    for scan in (True, False):
        model = from_torch_state_dict(original, reference["cfg"].replace(scan_layers=scan, **_KERNEL[scan]))
        out = apply(model, *reference["inputs"])
        np.testing.assert_allclose(np.asarray(out), reference["out"], atol=ATOL, rtol=0)


# -------------------------------------------------------------------------------------------- bad checkpoints
def test_bad_checkpoint_lists_missing_unexpected_and_misshaped_keys(reference):
    sd = dict(open_state_dict(reference["path"]).items())
    del sd["blocks.1.attn2.to_k.weight"]
    sd["proj_out.weight"] = np.zeros((3, 3), np.float32)
    sd["blocks.0.attn1.to_zz.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(CheckpointError) as err:
        from_torch_state_dict(sd, reference["cfg"])
    msg = str(err.value)
    assert "blocks.attn2.to_k.kernel[layer 1]" in msg
    assert "proj_out.weight: (3, 3)" in msg
    assert "blocks.0.attn1.to_zz.weight" in msg


def test_bad_inputs_raise_clear_errors():
    cfg = WanConfig.tiny()
    model = nnx.eval_shape(lambda: WanTransformer(cfg, nnx.Rngs(0)))  # inputs are checked before any compute
    x = jnp.zeros((1, 4, 3, 4, 6))
    t = jnp.zeros((1,))
    e = jnp.zeros((1, 5, 16))
    with pytest.raises(ValueError, match="channels"):
        model(jnp.zeros((1, 5, 3, 4, 6)), t, e)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        model(jnp.zeros((1, 4, 3, 5, 6)), t, e)
    with pytest.raises(ValueError, match="timestep must be"):
        model(x, jnp.zeros((1, 7)), e)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, t, jnp.zeros((1, 5, 8)))
    with pytest.raises(attn_lib.AttentionUnavailable, match="cudnn.*GPU"):
        attn_lib.attention(jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 4, 2, 8)), "cudnn")
    with pytest.raises(attn_lib.AttentionUnavailable, match="splash.*TPU"):
        attn_lib.attention(jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 4, 2, 8)), "splash")


# ---------------------------------------------------------------------------------------------- attention kernels
@pytest.mark.parametrize("lq,lk,bq,bk", [(37, 21, 8, 16)])
def test_blocked_attention_matches_softmax_attention_values_and_grads(lq, lk, bq, bk):
    """Blocked (online softmax, padded tiles, custom_vjp backward) vs plain softmax attention; atol 2e-5 fp32."""
    rng = np.random.default_rng(lq + lk)
    q = jnp.asarray(rng.standard_normal((2, lq, 3, 16), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((2, lk, 3, 16), dtype=np.float32))
    v = jnp.asarray(rng.standard_normal((2, lk, 3, 16), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((2, lq, 3, 16), dtype=np.float32))

    def plain(q, k, v):  # independent textbook formula
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    blocked = lambda q, k, v: attn_lib.blocked_attention(q, k, v, bq, bk)  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jit(blocked).lower(q, k, v).compile(FAST_COMPILE)(q, k, v)), np.asarray(jax.jit(plain)(q, k, v)), atol=ATOL)
    g_ref = jax.jit(jax.grad(loss(plain), argnums=(0, 1, 2)))(q, k, v)
    g = jax.jit(jax.grad(loss(blocked), argnums=(0, 1, 2))).lower(q, k, v).compile(FAST_COMPILE)(q, k, v)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL)


def test_splash_kernel_semantics_in_interpret_mode():
    """The TPU splash path (padding to 128, segment ids for padded keys) run by Pallas' interpreter on CPU."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((1, 130, 2, 128), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((1, 70, 2, 128), dtype=np.float32))
    v = jnp.asarray(rng.standard_normal((1, 70, 2, 128), dtype=np.float32))
    got = attn_lib.splash_attention(q, k, v, interpret=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(attn_lib.xla_attention)(q, k, v)), atol=1e-4)


def test_convert_tool_writes_orbax_params(reference, tmp_path):
    """tools/convert_wan.py: the checkpoint's own config.json, bf16 output, restorable into the abstract model."""
    import importlib.util
    import json
    import os

    from vggrpo_jax.checkpoint import restore_params
    from vggrpo_jax.convert.wan_transformer import abstract_model

    spec = importlib.util.spec_from_file_location(
        "convert_wan", os.path.join(os.path.dirname(__file__), "..", "tools", "convert_wan.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dst = str(tmp_path / "dit")
    assert tool.main(["--src", reference["path"], "--dst", dst, "--dtype", "bfloat16"]) == 0
    with open(dst + ".config.json") as fh:
        cfg = WanConfig.from_diffusers_config(json.load(fh), param_dtype="bfloat16")
    assert cfg == reference["cfg"].replace(param_dtype="bfloat16")
    abstract = nnx.state(abstract_model(cfg), nnx.Param)
    restored = nnx.to_flat_state(restore_params(dst, abstract))
    expected = dict(nnx.to_flat_state(nnx.state(from_torch_state_dict(reference["path"], cfg), nnx.Param)))
    assert len(restored) == len(expected)
    for path, var in restored:
        assert var.get_value().dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(var.get_value(), np.float32),
                                      np.asarray(expected[path].get_value(), np.float32))
