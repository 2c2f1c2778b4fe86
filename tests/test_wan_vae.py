"""Wan VAE parity against diffusers' AutoencoderKLWan (tiny random weights, both the 2.1 and the 2.2 residual form).

The reference is built here with random weights (norm gammas and biases randomised too), saved with diffusers'
save_pretrained (config.json + safetensors) and loaded through OUR converter from that directory. Our encode/decode
run chunked (first chunk, then the steady chunks unrolled, or in one lax.scan with unroll_chunks=0); the reference
runs its own chunk loop in PyTorch fp32.
Tolerance: max-abs ≤ 1e-4 (fp32; measured ≈ 1e-6).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from flax import nnx

from vggrpo_jax.convert.common import CheckpointError
from vggrpo_jax.convert.wan_vae import (
    diffusers_keys,
    from_torch_state_dict,
    original_key,
    to_original_state_dict,
    to_torch_state_dict,
)
from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig

ATOL = 1e-4
HEIGHT, WIDTH = 32, 48  # non-square, so a swapped H/W anywhere (patchify, attention, resample) shows


_DIRS: dict[str, str] = {}  # variant → the saved diffusers directory


def _reference(cfg: WanVAEConfig, seed: int):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    ref = AutoencoderKLWan(**cfg.to_diffusers_config()).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return ref


@pytest.fixture(scope="module", params=["tiny21", "tiny22"])
def pair(request, tmp_path_factory):
    """(cfg, diffusers reference, our model loaded from the saved safetensors directory, torch state dict)."""
    cfg = getattr(WanVAEConfig, request.param)()
    ref = _reference(cfg, seed=0 if request.param == "tiny21" else 1)
    out = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(str(out), safe_serialization=True)
    assert any(f.endswith(".safetensors") for f in os.listdir(out))
    model = from_torch_state_dict(str(out))  # config read from the directory's config.json
    assert model.config == cfg
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    _DIRS[request.param] = str(out)
    return cfg, ref, model, sd


_encode = nnx.jit(lambda m, x: m.encode(x))
_decode = nnx.jit(lambda m, z: m.decode(z))


@pytest.mark.parametrize("frames,unroll", [(1, 4), (5, 4), (9, 4), (9, 0)], ids=["1", "5", "9", "9-scan"])
def test_encode_decode_parity(pair, frames, unroll):
    cfg, ref, model, _ = pair
    model.config = dataclasses.replace(model.config, unroll_chunks=unroll)
    batch = 2 if frames == 5 else 1
    x = np.random.default_rng(frames).uniform(-1, 1, (batch, 3, frames, HEIGHT, WIDTH)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(x)).latent_dist
        ref_mean, ref_logvar = dist.mean.numpy(), dist.logvar.numpy()
        ref_video = ref.decode(dist.mean).sample.numpy()

    mean, logvar = _encode(model, x)
    f_lat = 1 + (frames - 1) // 4
    s = cfg.spatial_stride
    assert mean.shape == logvar.shape == (batch, cfg.z_dim, f_lat, HEIGHT // s, WIDTH // s) == ref_mean.shape
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(logvar), ref_logvar, rtol=0, atol=ATOL)

    video = np.asarray(_decode(model, ref_mean))
    assert video.shape == ref_video.shape == x.shape
    assert np.mean(np.abs(ref_video) < 1.0) > 0.5  # mostly unclipped, so the comparison sees the network
    np.testing.assert_allclose(video, ref_video, rtol=0, atol=ATOL)


def test_spatial_tiling_matches_diffusers_enable_tiling(pair):
    """encode_tiled / decode_tiled against diffusers with enable_tiling on the same tile grid (one frame: tiling is
    spatial; the temporal chunking inside each tile is the code tested above). Run on the 2.2 form only, whose
    patchified grid exercises every branch of the tile arithmetic (2.1 is the patch-1 case), to keep compile
    time down."""
    cfg, ref, model, _ = pair
    if not cfg.patch_size:
        pytest.skip("tiling parity runs on the Wan2.2 form (test budget)")
    p = cfg.patch_size or 1
    x = np.random.default_rng(7).uniform(-1, 1, (1, 3, 1, 24 * p, 48 * p)).astype(np.float32)
    enc_tiles, dec_tiles = ((32, 32), (24, 24)), (((32, 32), (24, 24)) if p == 1 else ((64, 64), (48, 48)))
    try:
        with torch.no_grad():
            ref.enable_tiling(*enc_tiles[0], *enc_tiles[1])
            dist = ref.encode(torch.from_numpy(x)).latent_dist
            ref.enable_tiling(*dec_tiles[0], *dec_tiles[1])
            ref_video = ref.decode(dist.mean).sample.numpy()
            ref.disable_tiling()
            plain = ref.encode(torch.from_numpy(x)).latent_dist.mean.numpy()
    finally:
        ref.disable_tiling()
    assert np.abs(plain - dist.mean.numpy()).max() > 1e-3  # the grid really tiles (seams differ from untiled)
    mean, logvar = model.encode_tiled(x, *enc_tiles)
    np.testing.assert_allclose(np.asarray(mean), dist.mean.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(logvar), dist.logvar.numpy(), rtol=0, atol=ATOL)
    video = model.decode_tiled(dist.mean.numpy(), *dec_tiles)
    np.testing.assert_allclose(np.asarray(video), ref_video, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="multiples"):
        model.decode_tiled(dist.mean.numpy(), (30, 30), (20, 20))


def test_original_wan_names_load_the_same_parameters(pair, tmp_path):
    """A Wan-repo (.pth) state dict, built from the diffusers one by the documented inverse table, loads to the very
    same parameters as the diffusers checkpoint."""
    cfg, _, model, sd = pair
    pth = tmp_path / "Wan_VAE.pth"
    torch.save({k: torch.from_numpy(v) for k, v in to_original_state_dict(sd, cfg).items()}, str(pth))
    other = from_torch_state_dict(str(pth), cfg)
    ours = nnx.to_flat_state(nnx.state(model, nnx.Param))
    theirs = dict(nnx.to_flat_state(nnx.state(other, nnx.Param)))
    for path, var in ours:
        np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(theirs[path].get_value()), str(path))


def test_original_table_agrees_with_diffusers_single_file_converter():
    """Independent check of the Wan2.1 table: diffusers' own original→diffusers key converter (written for the real
    config's num_res_blocks=2 and channel multipliers) maps our original names back onto the diffusers names."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    cfg = WanVAEConfig.tiny21(num_res_blocks=2, dim_mult=(1, 2, 4, 4))
    keys = diffusers_keys(cfg)
    original = {original_key(k, cfg): k for k in keys}
    assert len(original) == len(keys)
    converted = convert_wan_vae_to_diffusers({o: o for o in original})
    assert {new: original[old] for new, old in converted.items()} == {k: k for k in keys}


def test_round_trip_state_dict(pair):
    cfg, _, model, sd = pair
    back = to_torch_state_dict(model)
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, k)
    again = from_torch_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, cfg)  # torch tensors too
    np.testing.assert_array_equal(
        np.asarray(again.encoder.conv_in.kernel.get_value()), np.asarray(model.encoder.conv_in.kernel.get_value())
    )


def test_cli_writes_orbax_that_restores(pair, tmp_path):
    import importlib.util

    from vggrpo_jax.checkpoint import restore_params

    cfg, _, model, _ = pair
    if not cfg.patch_size:
        pytest.skip("the CLI round trip runs once, on the Wan2.2 form (test budget)")
    src = _DIRS["tiny21" if cfg.z_dim == 16 else "tiny22"]
    spec = importlib.util.spec_from_file_location(
        "convert_wan_vae", os.path.join(os.path.dirname(__file__), "..", "tools", "convert_wan_vae.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    dst = str(tmp_path / "vae_orbax")
    assert cli.main(["--src", src, "--dst", dst]) == 0
    assert os.path.exists(dst + ".config.json")
    with pytest.raises(FileExistsError):
        cli.main(["--src", src, "--dst", dst])
    abstract = nnx.state(nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    restored = dict(nnx.to_flat_state(restore_params(dst, abstract)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        np.testing.assert_array_equal(np.asarray(restored[path].get_value()), np.asarray(var.get_value()))


def test_bad_checkpoints_list_every_problem(pair):
    cfg, _, _, sd = pair
    bad = dict(sd)
    del bad["decoder.conv_out.bias"]
    bad["encoder.not_a_layer.weight"] = np.zeros((2, 2, 1, 1, 1), np.float32)
    bad["encoder.conv_in.weight"] = np.zeros((7, 3, 3, 3, 3), np.float32)
    with pytest.raises(CheckpointError) as err:
        from_torch_state_dict(bad, cfg)
    msg = str(err.value)
    assert "decoder.conv_out.bias" in msg and "missing" in msg
    assert "encoder.not_a_layer.weight" in msg and "unexpected" in msg
    assert "encoder.conv_in.weight" in msg and "mis-shaped" in msg
    other = WanVAEConfig.tiny22() if cfg.z_dim == 16 else WanVAEConfig.tiny21()
    with pytest.raises(CheckpointError):
        from_torch_state_dict(sd, other)
    with pytest.raises(FileNotFoundError):
        from_torch_state_dict("/nonexistent/wan_vae.pth", cfg)


def test_bad_inputs_raise_before_xla(pair):
    cfg, _, model, _ = pair
    s = cfg.spatial_stride
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        model.encode(np.zeros((1, 3, 4, s, s), np.float32))
    with pytest.raises(ValueError, match="multiples of"):
        model.encode(np.zeros((1, 3, 5, s + 2, s), np.float32))
    with pytest.raises(ValueError, match="channels"):
        model.encode(np.zeros((1, 4, 5, s, s), np.float32))
    with pytest.raises(ValueError, match="latents"):
        model.decode(np.zeros((1, cfg.z_dim + 1, 2, 2, 2), np.float32))


def test_latent_normalisation_matches_wan_pipeline(pair):
    """diffusers' WanPipeline: latents / (1 / std) + mean before decoding, (x - mean) / std for the DiT."""
    cfg, ref, model, _ = pair
    z = np.random.default_rng(0).standard_normal((2, cfg.z_dim, 3, 2, 2)).astype(np.float32)
    mean = torch.tensor(ref.config.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(ref.config.latents_std).view(1, cfg.z_dim, 1, 1, 1)
    expected = (torch.from_numpy(z) / inv_std + mean).numpy()
    np.testing.assert_allclose(np.asarray(model.denormalize_latents(z)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.normalize_latents(expected)), z, rtol=1e-5, atol=1e-5)


def test_frame_count_helpers():
    cfg = WanVAEConfig.wan21()
    assert cfg.z_dim == 16 and cfg.temporal_stride == 4 and cfg.spatial_stride == 8
    c22 = WanVAEConfig.wan22()
    assert c22.z_dim == 48 and c22.spatial_stride == 16 and len(c22.latents_std) == 48
    assert cfg.num_frames_for_latents(21) == 81 and cfg.num_latent_frames(81) == 21
    with pytest.raises(ValueError, match="frames"):
        cfg.num_latent_frames(80)
    with pytest.raises(ValueError, match="unknown keys"):
        WanVAEConfig.from_diffusers_config({"base_dim": 96, "bogus": 1})
    with pytest.raises(ValueError, match="latents_mean"):
        WanVAEConfig.tiny21(z_dim=8)
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    assert abstract.num_frames_for_latents(2) == 5


def test_configs_round_trip_diffusers_in_memory_and_config_json(tmp_path):
    """from_diffusers_config reads what diffusers hands out: the in-memory `model.config` (with its underscore
    bookkeeping keys such as _use_default_values) and the saved config.json, for the VAE and the transformer."""
    import json

    import diffusers

    from vggrpo_jax.models.wan.config import WanConfig

    for ours, cls, theirs in (
        (WanVAEConfig.tiny21(), WanVAEConfig, diffusers.AutoencoderKLWan),
        (WanConfig.tiny(), WanConfig, diffusers.WanTransformer3DModel),
    ):
        model = theirs.from_config(ours.to_diffusers_config())  # how diffusers builds a loaded model
        in_memory = dict(model.config)
        if cls is WanVAEConfig:  # diffusers filled clip_output and dropout from defaults and recorded that
            assert "_use_default_values" in in_memory
        assert cls.from_diffusers_config(in_memory) == ours
        out = tmp_path / theirs.__name__
        model.save_config(str(out))
        with open(out / "config.json") as fh:
            assert cls.from_diffusers_config(json.load(fh)) == ours
