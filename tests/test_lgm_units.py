"""LGM building blocks: correspondence, connector (conv parity with torch.nn.Conv3d), losses, metrics, resumable loop."""

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from flax import nnx

import vggrpo_jax  # noqa: F401
from vggrpo_jax.lgm import correspondence as corr
from vggrpo_jax.lgm.align import alignment_loss, quaternion_l1, relative_mse
from vggrpo_jax.lgm.config import validate_lgm
from vggrpo_jax.lgm.connector import ZERO_INIT, Connector, ConnectorConfig
from vggrpo_jax.lgm.host_init import random_init
from vggrpo_jax.lgm.evaluate import depth_absrel, rotation_error_deg, spearman, translation_error
from vggrpo_jax.lgm.loop import LGM_OPTIM, fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _connector(cfg, **kw):
    return random_init(lambda: Connector(cfg, rngs=nnx.Rngs(0), **kw), 0, zeros=ZERO_INIT)


def _jit_call(module, *args):
    graphdef, state = nnx.split(module)
    return jax.jit(lambda st, *a: nnx.merge(graphdef, st)(*a))(state, *args)


# ------------------------------------------------------------------------------------------------ correspondence
def test_temporal_correspondence():
    assert corr.latent_frame_span(0) == (0, 0)
    assert corr.latent_frame_span(1) == (1, 4)
    assert corr.latent_frame_span(5) == (17, 20)
    np.testing.assert_array_equal(corr.view_frame_indices(21), np.arange(21) * 4)  # default "last": 4k
    np.testing.assert_array_equal(corr.view_frame_indices(3, rule="first"), [0, 1, 5])
    np.testing.assert_array_equal(corr.view_frame_indices(3, rule="center"), [0, 3, 7])
    assert corr.num_latent_frames(81) == 21 and corr.num_video_frames(21) == 81
    with pytest.raises(ValueError, match="1 \\+ 4"):
        corr.num_latent_frames(80)
    with pytest.raises(ValueError, match="rule"):
        corr.view_frame_indices(3, rule="middle")


def test_spatial_correspondence_full_wan21():
    c = corr.make_correspondence((1, 16, 21, 60, 104), spatial_stride=2)
    assert c.grid == (30, 52) and c.teacher_hw == (420, 728) and c.num_views == 21 and c.frames[-1] == 80
    # The connector's own conv arithmetic gives the same grid.
    assert ConnectorConfig().grid((60, 104)) == (30, 52)
    # Wan2.2: 16x VAE, connector stride 1 -> one token per 16 px as well.
    c22 = corr.make_correspondence((48, 8, 44, 80), spatial_stride=1)
    assert c22.grid == (44, 80) and c22.teacher_hw == (616, 1120)


def test_teacher_images_pick_and_resize():
    video = jnp.broadcast_to(jnp.linspace(-1, 1, 9)[None, None, :, None, None], (1, 3, 9, 32, 32))
    c = corr.make_correspondence((16, 3, 4, 4), spatial_stride=2)
    imgs = corr.teacher_images(video, c)
    assert imgs.shape == (1, 3, 3, 28, 28)
    # Frame 4k of a video whose frame f has the value linspace(-1, 1, 9)[f], mapped to [0, 1].
    np.testing.assert_allclose(imgs[0, :, 0, 0, 0], (np.linspace(-1, 1, 9)[[0, 4, 8]] + 1) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="beyond"):
        corr.select_view_frames(video[:, :, :5], [0, 4, 8])


# ------------------------------------------------------------------------------------------------ connector
def test_connector_conv_matches_torch_conv3d():
    """The paper connector is one Conv3d(k=5, stride (1,2,2), padding 2): compare its features with torch's."""
    cfg = ConnectorConfig(ref_view_embed=True)
    conn = _connector(cfg, latent_channels=16, trunk_dim=24, encoder_dim=12, stitch_layer=2, tap_layers=(1, 3))
    z = jax.random.normal(jax.random.key(1), (2, 16, 3, 8, 10))
    out = _jit_call(conn, z)
    n, (h, w) = 3, (4, 5)
    t = h * w
    assert out.tokens.shape == (2, n * t + 1, 24) and out.hook0.shape == (2, n, t, 12)
    assert set(out.taps) == {1} and out.taps[1].shape == (2, n, t, 24)  # only taps below ℓ = 2
    ref = torch.nn.Conv3d(16, 24, kernel_size=5, stride=(1, 2, 2), padding=2)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(conn.conv.kernel[...]).transpose(4, 3, 0, 1, 2).copy()))
        ref.bias.copy_(torch.from_numpy(np.array(conn.conv.bias[...])))
        y = ref(torch.from_numpy(np.array(z))).numpy()  # (B, D, N, h, w)
    y = y.transpose(0, 2, 3, 4, 1).reshape(2, n, t, 24)
    y[:, 0] += np.asarray(conn.ref_view_embed[...])  # view 0 carries the reference-view embedding
    np.testing.assert_allclose(np.asarray(out.tokens[:, :-1]).reshape(2, n, t, 24), y, atol=2e-5, rtol=1e-5)


def test_connector_rejects_bad_inputs_and_configs():
    conn = _connector(ConnectorConfig(), latent_channels=16, trunk_dim=8, encoder_dim=8, stitch_layer=1)
    with pytest.raises(ValueError, match="channels"):
        conn(jnp.zeros((1, 4, 3, 8, 8)))
    with pytest.raises(ValueError, match="\\(B, C, F', H', W'\\)"):
        conn(jnp.zeros((16, 3, 8, 8)))
    with pytest.raises(ValueError, match="one geometry view per latent frame"):
        ConnectorConfig(stride=(2, 2, 2))
    with pytest.raises(ValueError, match="number of views"):
        ConnectorConfig(kernel=(5, 5, 5), padding=(1, 2, 2))
    deep = _connector(ConnectorConfig(blocks=2, block_kind="conv", pos_embed_grid=4), latent_channels=16,
                      trunk_dim=8, encoder_dim=8, stitch_layer=1)
    assert _jit_call(deep, jnp.zeros((1, 16, 2, 8, 8))).tokens.shape == (1, 2 * 16 + 1, 8)


# ------------------------------------------------------------------------------------------------ losses
def test_alignment_losses():
    q = jax.random.normal(jax.random.key(0), (2, 3, 4))
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    assert float(quaternion_l1(q, -q)) == 0.0  # q and -q are the same rotation
    assert float(quaternion_l1(q, q.at[..., 0].add(0.5))) == pytest.approx(0.5, abs=1e-6)
    pred = {"cam_trans": jnp.zeros((1, 2, 3)), "cam_quats": q[:1, :2], "depth_z": jnp.ones((1, 2, 4, 4))}
    tgt = {"cam_trans": jnp.ones((1, 2, 3)), "cam_quats": -q[:1, :2], "depth_z": jnp.full((1, 2, 4, 4), 3.0)}
    loss, parts = alignment_loss(pred, tgt, {"translation": 2.0, "rotation": 1.0, "depth": 0.5})
    assert float(parts["translation"]) == 1.0 and float(parts["rotation"]) == 0.0 and float(parts["depth"]) == 2.0
    assert float(loss) == pytest.approx(2.0 * 1.0 + 0.5 * 2.0)
    with pytest.raises(ValueError, match="unknown alignment modalities"):
        alignment_loss(pred, tgt, {"normals": 1.0})
    with pytest.raises(KeyError, match="pts3d"):
        alignment_loss(pred, tgt, {"points": 1.0})
    x = jax.random.normal(jax.random.key(1), (64, 5)) * 3 + 2
    # Predicting each channel's mean leaves exactly the variance: relative error 1.
    rel = relative_mse(jnp.broadcast_to(x.mean(0), x.shape), x, jnp.mean(jnp.var(x, axis=0)))
    assert float(rel) == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------------------------------------ metrics
def _rot_z(deg):
    a = np.radians(deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


def test_pose_and_depth_metrics():
    a = np.stack([_rot_z(0), _rot_z(10)])
    b = np.stack([_rot_z(30), _rot_z(10)])
    b[1, :3, 3] = [3.0, 4.0, 0.0]
    np.testing.assert_allclose(rotation_error_deg(jnp.asarray(a), jnp.asarray(b)), [30.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(translation_error(jnp.asarray(a), jnp.asarray(b)), [0.0, 5.0], atol=1e-6)
    assert float(rotation_error_deg(jnp.asarray(a[1]), jnp.asarray(a[1]))) < 1e-5  # exact at zero (no arccos)
    ref = jnp.asarray([[[1.0, 2.0], [4.0, 0.0]]])  # one view; the 0 is invalid
    pred = jnp.asarray([[[1.5, 2.0], [2.0, 9.0]]])
    assert float(depth_absrel(pred, ref)) == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # with ties
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # A failed reward (−inf) ranks lowest; NaN makes the correlation undefined.
    c = np.where(np.arange(40) % 7 == 0, -np.inf, b)
    assert spearman(a, c) == pytest.approx(scipy.stats.spearmanr(a, np.where(np.isinf(c), -1e9, c)).statistic, abs=1e-12)
    assert np.isnan(spearman(a, np.where(np.arange(40) == 3, np.nan, b)))


# ------------------------------------------------------------------------------------------------ loop
@dataclasses.dataclass(frozen=True)
class _NoisyRegression:
    graphdef: object

    def __call__(self, params, frozen, batch, key):
        pred = nnx.merge(self.graphdef, params)(batch[0]) + 0.01 * jax.random.normal(key, (batch[0].shape[0], 2))
        return jnp.mean((pred - batch[1]) ** 2), {}


def test_fit_stop_and_resume_equals_uninterrupted(tmp_path):
    graphdef, params = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x @ np.ones((3, 2), np.float32)
    batch = lambda s: (x[(s * 8) % 64:(s * 8) % 64 + 8], y[(s * 8) % 64:(s * 8) % 64 + 8])  # noqa: E731
    kw = dict(name="t", frozen=None, loss_fn=_NoisyRegression(graphdef), batch_fn=batch,
              optim=dataclasses.replace(LGM_OPTIM, lr=1e-2, warmup_steps=3), total_steps=20, rng=jax.random.key(3), progress=False)
    full = fit(params=params, **kw)
    first = fit(params=params, ckpt_dir=str(tmp_path / "c"), save_every=5, stop_after=8, **kw)
    assert first.step == 8 and not first.finished
    resumed = fit(params=params, ckpt_dir=str(tmp_path / "c"), save_every=5, **kw)
    assert resumed.finished and resumed.history[0]["step"] == 10  # continued from step 8, not from 0
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert full.history[-1]["loss"] < full.history[0]["loss"]
    # A checkpoint of another stage or another model is refused with a message.
    with pytest.raises(ValueError, match="stage"):
        fit(params=params, ckpt_dir=str(tmp_path / "c"), **{**kw, "name": "other"})
    g3, p3 = nnx.split(nnx.Linear(3, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="live"):
        fit(params=p3, ckpt_dir=str(tmp_path / "c"), **{**kw, "loss_fn": _NoisyRegression(g3)})


def _traces(workdir):
    return [os.path.join(r, n) for r, _, names in os.walk(os.path.join(workdir, "profile")) for n in names
            if n.endswith(".xplane.pb")]


def test_fit_profile_window_writes_a_trace(tmp_path):
    graphdef, params = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    x = np.ones((4, 3), np.float32)
    kw = dict(name="t", params=params, frozen=None, loss_fn=_NoisyRegression(graphdef), batch_fn=lambda s: (x, x[:, :2]),
              optim=LGM_OPTIM, total_steps=4, rng=jax.random.key(0), progress=False)
    fit(workdir=str(tmp_path / "quiet"), **kw)
    assert not os.path.exists(tmp_path / "quiet" / "profile")
    fit(profile_steps=2, workdir=str(tmp_path / "traced"), **kw)
    assert _traces(tmp_path / "traced")


@pytest.mark.slow
def test_lgm_job_profile_steps_traces_the_alignment(tmp_path):
    """`--config.train.profile_steps=N` of the LGM job: a trace of the alignment stage under <workdir>/profile."""
    import sys

    from vggrpo_jax.lgm.pipeline import run

    sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
    try:
        from lgm_smoke import get_config  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    c = get_config()
    c.train.profile_steps, c.train.progress = 2, False
    assert run(c, str(tmp_path))["finished"]
    assert _traces(tmp_path)


# ------------------------------------------------------------------------------------------------ config
def _load_config(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def test_configs_validate(tmp_path):
    toy = validate_lgm(_load_config("lgm_toy"))
    assert toy.any4d.preset == "tiny"
    full = _load_config("lgm_wan21")
    # Paper defaults (as reported) in the Wan2.1 config.
    assert tuple(full.connector.kernel) == (5, 5, 5) and tuple(full.connector.stride) == (1, 2, 2)
    assert full.any4d.lora_rank == 64 and full.any4d.lora_alpha == 32 and full.align.optim.lr == 2e-4
    with pytest.raises(ValueError, match="data"):
        validate_lgm(full)  # no calibration source configured
    full.data.videos.path = str(tmp_path / "videos")
    with pytest.raises(FileNotFoundError, match=r"config\.data\.videos\.path='.*videos': no such path"):
        validate_lgm(full)  # checked before anything is built
    os.makedirs(full.data.videos.path)
    validate_lgm(full)
    full.stitch.criterion = "best"
    with pytest.raises(ValueError, match="stitch.criterion"):
        validate_lgm(full)


def test_profile_steps_validation():
    c = _load_config("lgm_toy")
    assert c.train.profile_steps == 0
    c.train.profile_steps = 3
    validate_lgm(c)
    c.train.profile_steps = -1
    with pytest.raises(ValueError, match=r"config\.train\.profile_steps=-1: must be an integer ≥ 0"):
        validate_lgm(c)
    c.train.profile_steps, c.align.steps = 2, 0
    with pytest.raises(ValueError, match=r"config\.train\.profile_steps=2: traces the alignment stage .* align\.steps ≥ 2"):
        validate_lgm(c)


# ------------------------------------------------------------------------------------------------ data sources
def test_calibration_sources(tmp_path):
    from vggrpo_jax.data.video import write_video
    from vggrpo_jax.lgm.data import Concat, GeneratedClips, VideoDirectoryClips, split_heldout

    vids = tmp_path / "videos"
    vids.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        write_video(str(vids / f"clip{k}.mp4"), rng.uniform(-1, 1, (3, 12, 40, 56)).astype(np.float32))
    real = VideoDirectoryClips(str(vids), num_frames=9, height=32, width=48)
    item = real[1]["video"]
    assert len(real) == 3 and item.shape == (3, 9, 32, 48) and item.min() >= -1 and item.max() <= 1
    gen_dir = tmp_path / "generated"
    gen_dir.mkdir()
    np.savez(gen_dir / "s0.npz", latents=np.zeros((16, 3, 4, 6), np.float32))
    np.savez(gen_dir / "s1.npz", video=np.zeros((3, 9, 32, 48), np.float32))
    gen = GeneratedClips(str(gen_dir))
    assert gen[0]["latents"].shape == (16, 3, 4, 6) and "video" not in gen[0]
    with pytest.raises(ValueError, match="latents"):
        gen[1]
    train, held = split_heldout(Concat([real, gen]), 0.4)
    assert (len(train), len(held)) == (3, 2)
    with pytest.raises(FileNotFoundError, match="no video files"):
        VideoDirectoryClips(str(gen_dir), num_frames=9, height=32, width=48)
    with pytest.raises(ValueError, match="1 \\+ 4"):
        VideoDirectoryClips(str(vids), num_frames=10, height=32, width=48)


def test_heldout_sources_keep_their_ranges(tmp_path):
    """With real clips and generated samples, the held-out cache holds each source's held-out part in order, and
    heldout_ranges names them (the LGM evaluation reports each source's agreement separately)."""
    from vggrpo_jax.lgm.pipeline import build_sources, heldout_ranges

    c = _load_config("lgm_toy")
    c.data.toyworld.num_clips, c.data.heldout_fraction = 16, 0.25
    for i in range(8):
        np.savez(tmp_path / f"{i:06d}.npz", latents=np.full((4, 3, 8, 8), i, np.float32))
    c.data.generated.path = str(tmp_path)
    train, held = build_sources(c)
    assert (len(train), len(held)) == (12 + 6, 4 + 2)
    ranges = heldout_ranges(c)
    assert ranges == {"toyworld": (0, 4), "generated": (4, 6)}
    assert [float(held[i]["latents"][0, 0, 0, 0]) for i in range(*ranges["generated"])] == [6.0, 7.0]
