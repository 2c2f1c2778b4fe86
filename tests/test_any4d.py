"""Any4D parity against the PyTorch reference (uniception 0.1.7 + transformers DINOv2), converter and geometry checks.

The reference's random tiny weights are saved as a torch.save .pth under "model" with Any4D's key names (aliases and
geometric-input encoders included) and loaded through `convert.any4d` / the tool. Tolerance: every compared array
satisfies max|ours − ref| ≤ 1e-4 · max(1, max|ref|) in fp32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp
from flax import nnx

from any4d_reference import ReferenceAny4D
from vggrpo_jax.checkpoint import restore_params
from vggrpo_jax.convert.any4d import from_torch_state_dict
from vggrpo_jax.convert.common import CheckpointError, open_state_dict
from vggrpo_jax.geometry import make_intrinsics, pixel_rays
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


@pytest.fixture(scope="module", params=[(56, 56), (42, 70)], ids=["square_native_grid", "nonsquare_interpolated"])
def case(request, reference, model):
    images = _images(request.param, seed=sum(request.param))
    ref = reference(torch.from_numpy(images))
    ours = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images))
    emb = nnx.jit(lambda m, x: m.embed(x))(model, jnp.asarray(images))
    return dict(images=images, ref=ref, ours=ours, emb=emb)


# ------------------------------------------------------------------------------------------------------- parity
def test_encoder_and_fusion_parity(case, model):
    images = jnp.asarray(case["images"])
    x = (jnp.transpose(images.reshape((B * N,) + images.shape[2:]), (0, 2, 3, 1)) - jnp.array([0.485, 0.456, 0.406])
         ) / jnp.array([0.229, 0.224, 0.225])
    feats = nnx.jit(lambda m, x: m.encoder.model(x))(model, x)
    assert_close(feats.reshape(B, N, -1, CFG.encoder_dim), case["ref"]["encoder"], "DINOv2 patch tokens")
    assert_close(case["emb"].hook0, case["ref"]["hook0"], "hook0 (fused encoder features)")


def test_embed_matches_stream_entering_block0(case):
    ref_in0 = case["ref"]["block_io"][0][0]
    assert_close(case["emb"].tokens, ref_in0, "tokens entering trunk block 0")
    h, w = case["emb"].grid
    assert case["emb"].tokens.shape == (B, N * h * w + 1, CFG.trunk_dim)


def test_each_trunk_block_global_or_frame_and_scale_token(case, model):
    """Block k even sees all N·T+1 tokens (global), odd sees (B·N, T) per view; the scale token skips odd blocks."""
    h, w = case["emb"].grid
    t = h * w
    io = case["ref"]["block_io"]
    step = nnx.jit(lambda m, x, k: m.run_blocks(x, k, k + 1, N), static_argnums=2)
    stream = case["emb"].tokens
    for k in range(CFG.trunk_depth):
        ref_in, ref_out = io[k]
        if k % 2 == 0:
            assert ref_in.shape == (B, N * t + 1, CFG.trunk_dim), f"reference block {k} is not global"
            want = ref_out
        else:
            assert ref_in.shape == (B * N, t, CFG.trunk_dim), f"reference block {k} is not frame attention"
            # The stream after a frame block: views from the block, scale token carried over unchanged.
            want = np.concatenate([ref_out.reshape(B, N * t, -1), np.asarray(stream)[:, -1:]], 1)
        new, taps = step(model, stream, k)
        assert_close(new, want, f"stream after block {k}")
        if k % 2 == 1:
            np.testing.assert_array_equal(np.asarray(new)[:, -1], np.asarray(stream)[:, -1],
                                          err_msg=f"scale token changed in frame block {k}")
        if k in CFG.tap_layers:
            assert_close(taps[k], case["ref"]["taps"][k].reshape(B, N, t, -1), f"tap {k}")
        else:
            assert not taps
        stream = new


def test_attention_pattern_by_perturbation(case, model):
    """A global block lets view 1 influence view 0 and the scale token; a frame block does not."""
    h, w = case["emb"].grid
    t = h * w
    x = np.asarray(case["emb"].tokens)
    bumped = x.copy()
    bumped[:, t:2 * t] += np.random.default_rng(1).normal(size=bumped[:, t:2 * t].shape)  # view 1's tokens
    step = nnx.jit(lambda m, x, k: m.run_blocks(x, k, k + 1, N)[0], static_argnums=2)
    for k, crosses in ((0, True), (1, False)):
        a, b = np.asarray(step(model, jnp.asarray(x), k)), np.asarray(step(model, jnp.asarray(bumped), k))
        view0_moved = np.abs(a[:, :t] - b[:, :t]).max()
        scale_moved = np.abs(a[:, -1] - b[:, -1]).max()
        if crosses:
            assert view0_moved > 1e-3 and scale_moved > 1e-3, f"block {k} should mix views"
        else:
            assert view0_moved == 0.0 and scale_moved == 0.0, f"block {k} should keep views apart"


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
    """embed → blocks [0, ℓ) → blocks [ℓ, depth) → heads reproduces __call__ for every entry layer ℓ."""
    emb = case["emb"]
    hw = case["images"].shape[-2:]

    def split(m, tokens, hook0, ell):
        x, taps = m.run_blocks(tokens, 0, ell, N)
        x, more = m.run_blocks(x, ell, CFG.trunk_depth, N)
        return m.heads(hook0, {**taps, **more}, x, N, emb.grid, hw)

    run = nnx.jit(split, static_argnums=3)
    for ell in (1, 3):
        out = run(model, emb.tokens, emb.hook0, ell)
        for name in ("pts3d", "scene_flow", "metric_scale", "cam_quats"):
            assert_close(getattr(out, name), getattr(case["ours"], name), f"{name} entering at layer {ell}")
    with pytest.raises(ValueError, match="taps for trunk layers"):
        model.heads(emb.hook0, {}, emb.tokens, N, emb.grid, hw)


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
    geo = to_scene_geometry(jax.tree.map(jnp.asarray, out)).validate()
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


def test_converter_drops_listed_keys_and_folds_aliases(reference):
    sd = _sd(reference)
    assert any(k.startswith("cam_rot_encoder.") for k in sd) and "encoder.model.mask_token" in sd
    assert "dense_head.0.scratch.layer_rn.2.weight" in sd
    # Only the aliases present: canonical names removed, the converter still finds every tensor.
    aliased = {k: v for k, v in sd.items() if not k.startswith(("dpt_feature_head.", "dpt_regressor_head."))}
    a = from_torch_state_dict(aliased, CFG)
    b = from_torch_state_dict(sd, CFG)
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b)):
        assert pa == pb
        np.testing.assert_array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value()))


@pytest.mark.parametrize("damage, needle", [
    (lambda sd: sd.pop("info_sharing.self_attention_blocks.2.mlp.fc1.weight"), "self_attention_blocks.2.mlp.fc1"),
    (lambda sd: sd.__setitem__("pose_head.fc_extra.weight", np.zeros((3, 3), np.float32)), "pose_head.fc_extra.weight"),
    (lambda sd: sd.__setitem__("encoder.model.pos_embed", np.zeros((1, 5, 384), np.float32)), "encoder.model.pos_embed"),
    (lambda sd: sd["dense_head.0.scratch.layer_rn.1.weight"].__iadd__(1.0), "dense_head.0.scratch.layer_rn.1.weight"),
    (lambda sd: sd.__setitem__("info_sharing.view_pos_table", np.ones((1, 64), np.float32)), "view_pos_table"),
    (lambda sd: sd.pop("info_sharing.view_pos_table"), "view_pos_table"),
    (lambda sd: sd.__setitem__("depth_encoderX.weight", np.zeros(3, np.float32)), "depth_encoderX.weight"),
])
def test_bad_checkpoint_errors(reference, damage, needle):
    sd = _sd(reference)
    damage(sd)
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
        from_torch_state_dict(sd, CFG)


def test_missing_model_entry_and_tool_roundtrip(reference, checkpoint, tmp_path):
    bad = tmp_path / "no_model.pth"
    torch.save({"weights": {}}, bad)
    with pytest.raises(CheckpointError, match="model"):
        open_state_dict(str(bad), subkey="model")

    from tools.convert_any4d import main

    out = tmp_path / "orbax"
    main(["--checkpoint", checkpoint, "--out", str(out), "--config", "tiny"])
    abstract = nnx.eval_shape(lambda: Any4D(CFG, rngs=nnx.Rngs(0)))
    _, abs_params, _ = nnx.split(abstract, nnx.Param, ...)
    restored = restore_params(str(out), abs_params)
    qkv = reference.state_dict_any4d()["info_sharing.self_attention_blocks.1.attn.qkv.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(restored["info_sharing"]["self_attention_blocks"][1]["attn"]["qkv"]
                                             ["kernel"].get_value()), qkv.T)


def test_bad_inputs_raise():
    m = Any4D(CFG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiples of 14"):
        m(jnp.zeros((1, 2, 3, 50, 56)))
    with pytest.raises(ValueError, match=r"\(B, N, 3, H, W\)"):
        m(jnp.zeros((2, 3, 56, 56)))
    with pytest.raises(ValueError, match="not N·T\\+1"):
        m.run_blocks(jnp.zeros((1, 10, CFG.trunk_dim)), 0, 1, 3)


def test_lora_trunk_is_identity_at_init_and_bf16_close(case, checkpoint):
    """LoRA (rank 4) on the trunk starts as a no-op; the bf16 trunk stays near the fp32 outputs (heads fp32)."""
    images = jnp.asarray(case["images"])
    for cfg, tol in ((Any4DConfig.tiny(lora_rank=4), TOL), (Any4DConfig.tiny(dtype=jnp.bfloat16), 5e-2)):
        abstract = nnx.eval_shape(lambda: Any4D(cfg, rngs=nnx.Rngs(0)))
        graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
        m = nnx.merge(graphdef, from_torch_state_dict(checkpoint, cfg), rest)
        out = nnx.jit(lambda m, x: m(x))(m, images)
        assert out.pts3d.dtype == jnp.float32
        assert_close(out.pts3d, case["ref"]["pts3d"], f"pts3d with {cfg.dtype.__name__} lora={cfg.lora_rank}", tol)
