"""UMT5 encoder: parity with transformers' UMT5EncoderModel (tiny random weights through our converter), buckets,
bf16 mode, sharded execution, logical axes, and the strict hf / Wan converters."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from helpers.loading import load_script
from vggrpo_jax.convert import umt5 as conv
from vggrpo_jax.convert.common import CheckpointError, flatten_state
from vggrpo_jax.models.umt5 import UMT5Config, UMT5Encoder, relative_position_buckets, tiny, umt5_xxl
from vggrpo_jax.parallel import make_mesh, place_state

transformers = pytest.importorskip("transformers")

PARITY_ATOL = 1e-5  # fp32, all positions (transformers computes padded query rows too; only keys are masked)
HF_TINY = dict(
    vocab_size=99, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random transformers UMT5EncoderModel (norm weights randomised too) saved with save_pretrained."""
    torch.manual_seed(0)
    model = transformers.UMT5EncoderModel(transformers.UMT5Config(**HF_TINY)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("umt5_hf")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="module")
def config(hf_dir):
    with open(os.path.join(hf_dir[0], "config.json")) as fh:
        return UMT5Config.from_hf_config(json.load(fh))


@pytest.fixture(scope="module")
def jax_model(hf_dir, config):
    return conv.from_torch_state_dict(hf_dir[0], config)  # through the safetensors file on disk


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, HF_TINY["vocab_size"], (4, 40))
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 5:] = 0
    mask[3, 1:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def reference(hf_dir, inputs):
    ids, mask = inputs
    with torch.no_grad():
        return hf_dir[1](torch.tensor(ids), torch.tensor(mask)).last_hidden_state.numpy()


def _run(model, ids, mask):
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
    return np.asarray(fn(state, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)))


def test_parity_with_transformers(jax_model, inputs, reference):
    ids, mask = inputs
    out = _run(jax_model, ids, mask)
    assert out.shape == (4, 40, HF_TINY["d_model"]) and out.dtype == np.float32
    err = np.abs(out - reference)
    assert err[mask == 1].max() <= PARITY_ATOL, err[mask == 1].max()
    assert err.max() <= PARITY_ATOL, err.max()


@pytest.mark.parametrize("buckets, max_distance, length", [(32, 128, 600), (8, 16, 64)])
def test_relative_buckets_match_transformers(buckets, max_distance, length):
    cfg = transformers.UMT5Config(**{**HF_TINY, "relative_attention_num_buckets": buckets,
                                     "relative_attention_max_distance": max_distance})
    attn = transformers.models.umt5.modeling_umt5.UMT5Attention(cfg, has_relative_attention_bias=True)
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    expected = attn._relative_position_bucket(rel).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length, length, buckets, max_distance), expected)


def test_bf16_mode_close_and_fp32_output(hf_dir, config, inputs, reference):
    cfg = config.replace(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    model = conv.from_torch_state_dict(hf_dir[0], cfg)
    assert model.blocks.ffn.wi_0.kernel.get_value().dtype == jnp.bfloat16
    ids, mask = inputs
    out = _run(model, ids, mask)
    assert out.dtype == np.float32
    rel = np.abs(out - reference)[mask == 1].max() / np.abs(reference).max()
    assert rel < 3e-2, rel  # bf16 weights and matmuls, fp32 norms/softmax/residual


def test_sharded_run_matches(jax_model, inputs):
    ids, mask = inputs
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    graphdef, state = nnx.split(jax_model)
    placed = place_state(state, mesh)
    assert placed["blocks"]["self_attention"]["q"]["kernel"].get_value().sharding.spec[2] == "tensor"
    with jax.set_mesh(mesh):
        out = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(placed, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out), _run(jax_model, ids, mask), atol=1e-5)


def test_logical_axis_names():
    abstract = conv.abstract_encoder(tiny())
    axes = {
        ".".join(map(str, p)): tuple(v.get_metadata()["out_sharding"])
        for p, v in nnx.to_flat_state(nnx.state(abstract))
    }
    assert axes["shared.embedding"] == ("vocab", "embed")
    assert axes["blocks.self_attention.q.kernel"] == ("layers", "embed", "heads", "kv")
    assert axes["blocks.self_attention.o.kernel"] == ("layers", "heads", "kv", "embed")
    assert axes["blocks.self_attention.relative_attention_bias.embedding"] == ("layers", None, "heads")
    assert axes["blocks.ffn.wi_0.kernel"] == ("layers", "embed", "mlp")
    assert axes["blocks.ffn.wo.kernel"] == ("layers", "mlp", "embed")
    assert axes["blocks.attention_norm.scale"] == ("layers", "norm")
    assert axes["final_layer_norm.scale"] == ("norm",)


def test_configs():
    wan_text_encoder = {  # the text_encoder/config.json of the Wan diffusers checkpoints
        "architectures": ["UMT5EncoderModel"], "d_ff": 10240, "d_kv": 64, "d_model": 4096, "num_heads": 64,
        "num_layers": 24, "vocab_size": 256384, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6,
        "is_encoder_decoder": True, "dropout_rate": 0.1, "model_type": "umt5",
    }
    assert UMT5Config.from_hf_config(wan_text_encoder) == umt5_xxl()
    with pytest.raises(ValueError, match="gated-gelu"):
        UMT5Config.from_hf_config({**wan_text_encoder, "feed_forward_proj": "relu"})
    with pytest.raises(ValueError, match="decoder"):
        UMT5Config.from_hf_config({**wan_text_encoder, "is_decoder": True})


def test_bad_inputs_raise(jax_model):
    with pytest.raises(ValueError, match="attention_mask shape"):
        jax_model(jnp.zeros((2, 8), jnp.int32), jnp.ones((2, 7), jnp.int32))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        jax_model(jnp.zeros((8,), jnp.int32), jnp.ones((8,), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        jax_model(jnp.zeros((2, 8), jnp.float32), jnp.ones((2, 8), jnp.int32))


# ------------------------------------------------------------------------------------------------ converters
def _params(model):
    return flatten_state(nnx.state(model, nnx.Param))


def test_hf_round_trip(hf_dir, jax_model):
    torch_sd = {k: v.numpy() for k, v in hf_dir[1].state_dict().items()}
    exported = conv.to_torch_state_dict(jax_model, "hf")
    assert set(exported) == set(torch_sd) - {conv.HF_EMBED_ALIAS}
    for k, v in exported.items():
        np.testing.assert_array_equal(v, torch_sd[k], err_msg=k)
    # the in-memory state dict holds both tied names: accepted because they are equal
    again = conv.from_torch_state_dict(hf_dir[1].state_dict(), jax_model.config)
    for k, v in _params(again).items():
        np.testing.assert_array_equal(v, _params(jax_model)[k], err_msg=k)


def test_wan_naming(tmp_path, jax_model, inputs, reference):
    """A Wan-named .pth built by the documented inverse table loads to the same model (and the same outputs)."""
    wan_sd = conv.to_torch_state_dict(jax_model, "wan")
    assert "blocks.1.ffn.gate.0.weight" in wan_sd and "blocks.2.pos_embedding.embedding.weight" in wan_sd
    assert "token_embedding.weight" in wan_sd and "norm.weight" in wan_sd
    path = tmp_path / "models_t5_umt5-tiny-enc.pth"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in wan_sd.items()}, path)
    model = conv.from_torch_state_dict(str(path), jax_model.config)
    ids, mask = inputs
    np.testing.assert_allclose(_run(model, ids, mask), reference, atol=PARITY_ATOL)


def test_embedding_alias(hf_dir, jax_model):
    sd = {k: v.numpy() for k, v in hf_dir[1].state_dict().items()}
    only_alias = {k: v for k, v in sd.items() if k != "shared.weight"}
    model = conv.from_torch_state_dict(only_alias, jax_model.config)
    np.testing.assert_array_equal(model.shared.embedding.get_value(), sd["shared.weight"])
    differing = dict(sd)
    differing[conv.HF_EMBED_ALIAS] = sd["shared.weight"] + 1.0
    with pytest.raises(CheckpointError, match="tied"):
        conv.from_torch_state_dict(differing, jax_model.config)


def test_bad_checkpoint_lists_keys(hf_dir, jax_model):
    sd = {k: v.numpy() for k, v in hf_dir[1].state_dict().items()}
    del sd["encoder.block.1.layer.0.SelfAttention.k.weight"]
    sd["encoder.block.0.layer.0.SelfAttention.extra.weight"] = np.zeros((2, 2), np.float32)
    sd["decoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((2, 2), np.float32)
    sd["encoder.block.2.layer.1.DenseReluDense.wo.weight"] = np.zeros((32, 47), np.float32)
    with pytest.raises(CheckpointError) as info:
        conv.from_torch_state_dict(sd, jax_model.config)
    msg = str(info.value)
    assert "blocks.self_attention.k.kernel[layer 1]" in msg
    assert "encoder.block.0.layer.0.SelfAttention.extra.weight" in msg
    assert "decoder.block.0.layer.0.SelfAttention.q.weight" in msg
    assert "encoder.block.2.layer.1.DenseReluDense.wo.weight" in msg and "mis-shaped" in msg
    with pytest.raises(CheckpointError, match="unknown naming"):
        conv.from_torch_state_dict({"foo.weight": np.zeros(3)}, jax_model.config)
    wrong_cfg = jax_model.config.replace(num_heads=2, d_kv=16)  # same inner dim, other head split: bias tables differ
    with pytest.raises(CheckpointError, match="relative_attention_bias"):
        conv.from_torch_state_dict(hf_dir[0], wrong_cfg)


def _load_tool(name):
    return load_script(f"tools/{name}.py")


def test_convert_tool_and_load_encoder(tmp_path, hf_dir, inputs, reference):
    tool = _load_tool("convert_umt5")

    out = tmp_path / "orbax"
    assert tool.main(["--src", hf_dir[0], "--dst", str(out), "--dtype", "float32"]) == 0
    model, fingerprint = conv.load_encoder(str(out))
    ids, mask = inputs
    np.testing.assert_allclose(_run(model, ids, mask), reference, atol=PARITY_ATOL)
    # converting is transparent to the identity: same weights, same dtype -> same fingerprint
    assert fingerprint == conv.encoder_fingerprint(hf_dir[0], dtype=jnp.float32)
    assert fingerprint != conv.encoder_fingerprint(str(out), dtype=jnp.bfloat16)
    with pytest.raises(FileExistsError):
        tool.main(["--checkpoint", hf_dir[0], "--out", str(out)])


def test_umt5_xxl_compiles_abstractly_on_8_devices():
    """Full UMT5-XXL, batch 8 x 512, bf16, pure FSDP over the 8 simulated devices: lowers and compiles without any
    real array, and each device holds 1/8 of the weights (the sharding really shards)."""
    from vggrpo_jax.parallel import abstract_state_shardings, batch_sharding

    cfg = umt5_xxl(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    mesh = make_mesh({"fsdp": 8})
    graphdef, abstract_state = nnx.split(conv.abstract_encoder(cfg))
    shardings = abstract_state_shardings(abstract_state, mesh, strict=True)
    state = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s)),
        abstract_state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    tokens = jax.ShapeDtypeStruct((8, 512), jnp.int32, sharding=batch_sharding(mesh, 2))
    with jax.set_mesh(mesh):
        lowered = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m)).lower(state, tokens, tokens)
        compiled = lowered.compile()
    assert lowered.out_info.shape == (8, 512, 4096) and lowered.out_info.dtype == jnp.float32
    n_params = sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(abstract_state))
    assert 5.6e9 < n_params < 5.8e9  # UMT5-XXL encoder: 5.68B
    per_device = compiled.memory_analysis().argument_size_in_bytes
    assert abs(per_device - 2 * n_params / 8) / (2 * n_params / 8) < 0.01, per_device
