"""Any4D parity against the PyTorch reference (uniception 0.1.7 + transformers DINOv2), converter and geometry checks.

The reference's random tiny weights are saved as a torch.save .pth under "model" with Any4D's key names (aliases and
geometric-input encoders included) and loaded through `convert.any4d` / the tool. Tolerance: every compared array
satisfies max|ours − ref| ≤ 1e-4 · max(1, max|ref|) in fp32.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ under plain `pytest`

from any4d_reference import ReferenceAny4D
from vggrpo_jax.checkpoint import restore_params
from vggrpo_jax.convert.any4d import from_torch_state_dict, load_any4d
from vggrpo_jax.convert.common import CheckpointError, open_state_dict
from vggrpo_jax.geometry import pixel_rays
from vggrpo_jax.models.any4d import Any4D, Any4DConfig, Any4DOutput, to_scene_geometry

TOL = 1e-4
CFG = Any4DConfig.tiny()
B, N = 2, 3


def assert_close(ours, ref, name, tol=TOL):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs reference {ref.shape}"
    err = np.max(np.abs(ours - ref))
    bound = tol * max(1.0, float(np.max(np.abs(ref))))
    assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"
    return err


@pytest.fixture(scope="module")
def reference():
    return ReferenceAny4D(CFG, seed=0)


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("any4d") / "any4d_tiny.pth"
    torch.save({"model": reference.state_dict_any4d(), "epoch": 7}, path)
    return str(path)


@pytest.fixture(scope="module")
def model(checkpoint):
    abstract = nnx.eval_shape(lambda: Any4D(CFG, rngs=nnx.Rngs(0)))
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    params = from_torch_state_dict(open_state_dict(checkpoint, subkey="model"), CFG)
    return nnx.merge(graphdef, params, rest)


def _images(hw, seed):
    return np.random.default_rng(seed).uniform(0, 1, (B, N, 3) + hw).astype(np.float32)


def _normalise(images):
    x = jnp.transpose(jnp.asarray(images).reshape((B * N,) + images.shape[2:]), (0, 2, 3, 1))
    return (x - jnp.array([0.485, 0.456, 0.406])) / jnp.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def case(reference, model):
    """Non-square 42×70 input: a 3×5 patch grid, so the 4×4 position table is bicubic-resampled."""
    images = _images((42, 70), seed=3)
    ref = reference(torch.from_numpy(images))

    def everything(m, x):
        """__call__, and the same model entered at layer 2 through embed → run_blocks → run_blocks → heads."""
        emb = m.embed(x)
        h, taps = m.run_blocks(emb.tokens, 0, 2, N)
        h, more = m.run_blocks(h, 2, CFG.trunk_depth, N)
        assert sorted(taps) == [1] and sorted(more) == [2]
        split = m.heads(emb.hook0, {**taps, **more}, h, N, emb.grid, x.shape[-2:])
        return m(x), emb, split

    ours, emb, split = nnx.jit(everything)(model, jnp.asarray(images))
    return dict(images=images, ref=ref, ours=ours, emb=emb, split=split, model=model)


# ------------------------------------------------------------------------------------------------------- parity
def test_encoder_parity_on_native_square_grid(reference, model):
    """56×56 = the table's own 4×4 grid: DINOv2 uses the position table without resampling."""
    images = _images((56, 56), seed=1)
    ref = reference(torch.from_numpy(images))
    feats = nnx.jit(lambda m, x: m.encoder.model(x))(model, _normalise(images))
    assert_close(feats.reshape(B, N, -1, CFG.encoder_dim), ref["encoder"], "DINOv2 patch tokens (square)")


def test_encoder_and_fusion_parity(case, model):
    feats = nnx.jit(lambda m, x: m.encoder.model(x))(model, _normalise(case["images"]))
    assert_close(feats.reshape(B, N, -1, CFG.encoder_dim), case["ref"]["encoder"], "DINOv2 patch tokens")
    assert_close(case["emb"].hook0, case["ref"]["hook0"], "hook0 (fused encoder features)")


def test_embed_matches_stream_entering_block0(case):
    ref_in0 = case["ref"]["block_io"][0][0]
    assert_close(case["emb"].tokens, ref_in0, "tokens entering trunk block 0")
    h, w = case["emb"].grid
    assert case["emb"].tokens.shape == (B, N * h * w + 1, CFG.trunk_dim)


def test_each_trunk_block_global_or_frame_and_scale_token(case, model):
    """Block k even sees all N·T+1 tokens (global), odd sees (B·N, T) per view; the scale token skips odd blocks.

    Each of our blocks is fed the reference's own stream entering it, so an error cannot hide behind another.
    """
    h, w = case["emb"].grid
    t = h * w
    io = case["ref"]["block_io"]
    streams_in, wants = [], []
    stream = np.asarray(case["emb"].tokens)
    for k in range(CFG.trunk_depth):
        ref_in, ref_out = io[k]
        if k % 2 == 0:
            assert ref_in.shape == (B, N * t + 1, CFG.trunk_dim), f"reference block {k} is not global"
            streams_in.append(ref_in)
            wants.append(ref_out)
        else:
            assert ref_in.shape == (B * N, t, CFG.trunk_dim), f"reference block {k} is not frame attention"
            # The stream around a frame block: views through the block, the scale token carried over unchanged
            # (the reference takes it from the previous global block's output).
            scale_tok = io[k - 1][1][:, -1:]
            streams_in.append(np.concatenate([ref_in.reshape(B, N * t, -1), scale_tok], 1))
            wants.append(np.concatenate([ref_out.reshape(B, N * t, -1), scale_tok], 1))

    def each_block(m, xs):
        return [m.run_blocks(x, k, k + 1, N) for k, x in enumerate(xs)]

    results = nnx.jit(each_block)(model, [jnp.asarray(x) for x in streams_in])
    for k, ((new, taps), x_in, want) in enumerate(zip(results, streams_in, wants)):
        assert_close(new, want, f"stream after block {k}")
        if k % 2 == 1:
            np.testing.assert_array_equal(np.asarray(new)[:, -1], x_in[:, -1],
                                          err_msg=f"scale token changed in frame block {k}")
        if k in CFG.tap_layers:
            assert sorted(taps) == [k]
            assert_close(taps[k], case["ref"]["taps"][k].reshape(B, N, t, -1), f"tap {k}")
        else:
            assert not taps


def test_attention_pattern_by_perturbation(case, model):
    """A global block lets view 1 influence view 0 and the scale token; a frame block does not."""
    h, w = case["emb"].grid
    t = h * w
    x = np.asarray(case["emb"].tokens)
    bumped = x.copy()
    bumped[:, t:2 * t] += np.random.default_rng(1).normal(size=bumped[:, t:2 * t].shape)  # view 1's tokens

    def blocks01(m, a, b):
        return [m.run_blocks(z, k, k + 1, N)[0] for k in (0, 1) for z in (a, b)]

    a0, b0, a1, b1 = map(np.asarray, nnx.jit(blocks01)(model, jnp.asarray(x), jnp.asarray(bumped)))
    assert np.abs(a0[:, :t] - b0[:, :t]).max() > 1e-3, "global block 0 should let view 1 reach view 0"
    assert np.abs(a0[:, -1] - b0[:, -1]).max() > 1e-3, "global block 0 should let view 1 reach the scale token"
    assert np.abs(a1[:, :t] - b1[:, :t]).max() == 0.0, "frame block 1 must keep view 0 apart from view 1"
    assert np.abs(a1[:, -1] - b1[:, -1]).max() == 0.0, "frame block 1 must not touch the scale token"


def test_full_outputs_parity(case):
    ours, ref = case["ours"], case["ref"]
    for name in ("rays", "depth_along_ray", "pts3d_cam", "pts3d", "cam_trans", "cam_quats", "scene_flow", "conf",
                 "mask", "metric_scale"):
        assert_close(getattr(ours, name), ref[name], name)
    # Derived outputs: z-depth and c2w from the reference's own rays / poses.
    assert_close(ours.depth_z, ref["depth_along_ray"] * ref["rays"][..., 2], "depth_z")
    c2w = np.asarray(ours.c2w)
    assert_close(c2w[..., :3, 3], ref["cam_trans"], "c2w translation")
    pts = np.einsum("bnij,bnhwj->bnhwi", c2w[..., :3, :3], ref["pts3d_cam"]) + c2w[:, :, None, None, :3, 3]
    assert_close(pts, ref["pts3d"], "c2w applied to pts3d_cam")
    np.testing.assert_allclose(c2w[..., 3, :], np.broadcast_to([0, 0, 0, 1], c2w[..., 3, :].shape))


def test_layer_addressable_split_equals_full_call(case, model):
    """embed → blocks [0, 2) → blocks [2, depth) → heads (taps from both segments) reproduces __call__."""
    for name in ("pts3d", "scene_flow", "metric_scale", "cam_quats", "conf", "mask"):
        assert_close(getattr(case["split"], name), getattr(case["ours"], name), f"{name} entering at layer 2")
    emb = case["emb"]
    with pytest.raises(ValueError, match="taps for trunk layers"):
        model.heads(emb.hook0, {1: emb.hook0}, emb.tokens, N, emb.grid, case["images"].shape[-2:])


# --------------------------------------------------------------------------------------------------- geometry
def test_intrinsics_from_analytic_rays_through_scene_geometry():
    h, w = 36, 52
    K = np.array([[[60.0, 0, 25.0], [0, 55.0, 19.0], [0, 0, 1]], [[40.0, 0, 27.5], [0, 42.0, 17.0], [0, 0, 1]]],
                 np.float32)
    rays = np.asarray(pixel_rays(jnp.asarray(K), h, w))
    rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    depth = np.random.default_rng(0).uniform(1, 5, (2, h, w)).astype(np.float32)
    rays, depth = rays[None], depth[None]  # B = 1, N = 2
    eye = np.broadcast_to(np.eye(4, dtype=np.float32), (1, 2, 4, 4))
    out = Any4DOutput(
        rays=rays, depth_along_ray=depth, depth_z=depth * rays[..., 2], pts3d_cam=rays * depth[..., None],
        cam_quats=np.tile(np.array([0, 0, 0, 1.0], np.float32), (1, 2, 1)), cam_trans=np.zeros((1, 2, 3), np.float32),
        c2w=eye, pts3d=rays * depth[..., None], scene_flow=np.zeros_like(rays), conf=np.ones_like(depth),
        mask=np.ones_like(depth), metric_scale=np.ones((1,), np.float32))
    geo = jax.jit(to_scene_geometry)(jax.tree.map(jnp.asarray, out)).validate()
    rel = np.abs(np.asarray(geo.intrinsics)[0] - K) / np.abs(K).max(axis=(-2, -1), keepdims=True)
    assert rel.max() <= 1e-4, f"intrinsics relative error {rel.max():.3g}"
    np.testing.assert_allclose(np.asarray(geo.depth), depth * rays[..., 2], rtol=1e-6)


def test_to_scene_geometry_on_model_outputs(case):
    geo = to_scene_geometry(case["ours"]).validate()
    assert geo.depth.shape == (B, N) + case["images"].shape[-2:]
    assert np.all(np.isfinite(np.asarray(geo.intrinsics)))


# ------------------------------------------------------------------------------------------------ checkpoints
def _sd(reference):
    return {k: v.numpy() for k, v in reference.state_dict_any4d().items()}


def test_converter_drops_listed_keys_and_folds_aliases(reference, model):
    sd = _sd(reference)
    assert any(k.startswith("cam_rot_encoder.") for k in sd) and "encoder.model.mask_token" in sd
    assert "dense_head.0.scratch.layer_rn.2.weight" in sd
    # Only the aliases present (canonical DPT names removed): the converter still finds every tensor.
    aliased = {k: v for k, v in sd.items() if not k.startswith(("dpt_feature_head.", "dpt_regressor_head."))}
    converted = nnx.to_flat_state(from_torch_state_dict(aliased, CFG))
    loaded = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert len(converted) == len(loaded)
    for path, var in converted:
        np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(loaded[path].get_value()))


def test_bad_checkpoint_lists_every_offending_key(reference):
    sd = _sd(reference)
    sd.pop("info_sharing.self_attention_blocks.2.mlp.fc1.weight")                     # missing
    sd["pose_head.fc_extra.weight"] = np.zeros((3, 3), np.float32)                    # unexpected
    sd["depth_encoderX.weight"] = np.zeros(3, np.float32)                             # not on the drop list
    sd["encoder.model.pos_embed"] = np.zeros((1, 5, CFG.encoder_dim), np.float32)     # mis-shaped
    sd["dense_head.0.scratch.layer_rn.1.weight"] = sd["dense_head.0.scratch.layer_rn.1.weight"] + 1.0  # alias differs
    sd["info_sharing.view_pos_table"] = np.ones((1, CFG.trunk_dim), np.float32)      # not the constant table
    with pytest.raises(CheckpointError) as err:
        from_torch_state_dict(sd, CFG)
    msg = str(err.value)
    for needle in ("self_attention_blocks.2.mlp.fc1", "pose_head.fc_extra.weight", "depth_encoderX.weight",
                   "encoder.model.pos_embed", "dense_head.0.scratch.layer_rn.1.weight", "view_pos_table"):
        assert needle in msg, f"{needle} not named in:\n{msg}"
    sd = _sd(reference)
    sd.pop("info_sharing.view_pos_table")
    with pytest.raises(CheckpointError, match="missing.*view_pos_table"):
        from_torch_state_dict(sd, CFG)


def test_missing_model_entry_and_tool_roundtrip(reference, checkpoint, tmp_path):
    bad = tmp_path / "no_model.pth"
    torch.save({"weights": {}}, bad)
    with pytest.raises(CheckpointError, match="model"):
        open_state_dict(str(bad), subkey="model")

    from tools.convert_any4d import main

    out = tmp_path / "orbax"
    main(["--src", checkpoint, "--dst", str(out), "--preset", "tiny"])
    abstract = nnx.eval_shape(lambda: Any4D(CFG, rngs=nnx.Rngs(0)))
    _, abs_params, _ = nnx.split(abstract, nnx.Param, ...)
    restored = restore_params(str(out), abs_params)
    qkv = reference.state_dict_any4d()["info_sharing.self_attention_blocks.1.attn.qkv.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(restored["info_sharing"]["self_attention_blocks"][1]["attn"]["qkv"]
                                             ["kernel"].get_value()), qkv.T)
    # The library loader reads the .pth directly (lone "model" entry unwrapped).
    loaded = load_any4d(checkpoint, CFG)
    np.testing.assert_array_equal(np.asarray(loaded.info_sharing.self_attention_blocks[1].attn.qkv.kernel[...]), qkv.T)


def test_bad_inputs_raise():
    m = nnx.eval_shape(lambda: Any4D(CFG, rngs=nnx.Rngs(0)))  # the checks run before any parameter is touched
    with pytest.raises(ValueError, match="multiples of 14"):
        m(jnp.zeros((1, 2, 3, 50, 56)))
    with pytest.raises(ValueError, match=r"\(B, N, 3, H, W\)"):
        m(jnp.zeros((2, 3, 56, 56)))
    with pytest.raises(ValueError, match="not N·T\\+1"):
        m.run_blocks(jnp.zeros((1, 11, CFG.trunk_dim)), 0, 1, 3)


def test_lora_trunk_is_identity_at_init_and_bf16_trunk(case, checkpoint):
    """LoRA (rank 4) on the trunk starts as a no-op; the bf16 trunk stays near fp32; heads and outputs stay fp32."""
    emb = case["emb"]
    final_ref = case["ref"]["final_views"]

    def trunk(m, tokens):
        x, _ = m.run_blocks(tokens, 0, CFG.trunk_depth, N)
        return m.info_sharing.norm(x)[:, :-1]

    params = nnx.state(case["model"], nnx.Param)
    for cfg, tol in ((Any4DConfig.tiny(lora_rank=4), TOL), (Any4DConfig.tiny(dtype=jnp.bfloat16), 5e-2)):
        abstract = nnx.eval_shape(lambda: Any4D(cfg, rngs=nnx.Rngs(0)))
        graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
        # LoRA: through the converter (adapters get their init); bf16: same fp32 weights, bf16 trunk compute.
        m = nnx.merge(graphdef, from_torch_state_dict(checkpoint, cfg) if cfg.lora_rank else params, rest)
        if cfg.lora_rank:
            qkv = m.info_sharing.self_attention_blocks[0].attn.qkv
            assert qkv.rank == 4 and np.abs(np.asarray(qkv.lora_a[...])).max() > 0
        final = nnx.jit(trunk)(m, emb.tokens)
        assert_close(final, final_ref.reshape(final.shape), f"final trunk features, {cfg.dtype.__name__} "
                     f"lora={cfg.lora_rank}", tol)
        if cfg.dtype == jnp.bfloat16:
            out = nnx.eval_shape(lambda m, x: m(x), m, jax.ShapeDtypeStruct(case["images"].shape, jnp.float32))
            assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(out))
