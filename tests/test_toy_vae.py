"""Toy VAE job: exact resume after an interruption, crops from (seed, step), metrics, export round trip, zoo."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from vggrpo_jax import training, zoo
from vggrpo_jax.data import toyworld_tfds
from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig
from vggrpo_jax.toy_vae import export, job
from vggrpo_jax.toy_vae.data import CropSampler, recolour
from vggrpo_jax.toy_vae.metrics import psnr, ssim

tfds.disable_progress_bar()


def _tiny_config(data_dir: str):
    import configs.vae_toy as vae_toy  # noqa: PLC0415

    c = vae_toy.get_config()
    c.data.update(data_dir=data_dir, config="tiny", num_train=6, crop_frames=1, crop_size=16)
    c.model.update(base_dim=4, z_dim=4)
    c.train.update(steps=4, batch_size=2, log_every=1, checkpoint_every=1)
    c.eval.update(every=0, num_clips=2, final_num_clips=2, batch_size=2, stats_clips=2)
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    toyworld_tfds.build(d, "tiny")
    return d


def test_interrupted_run_resumes_exactly(data_dir, tmp_path, monkeypatch):
    c = _tiny_config(data_dir)
    straight = job.run(c, str(tmp_path / "a"))

    done = training.TrainLoop.step_done

    def stop_after_2(self, step, metrics=None):  # what a SIGTERM during step 2 does
        if step == 2:
            self.request_stop("test")
        return done(self, step, metrics)

    with monkeypatch.context() as m:
        m.setattr(training.TrainLoop, "step_done", stop_after_2)
        with pytest.raises(SystemExit, match="after step 2 of 4"):
            job.run(c, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "b" / "summary.json")
    resumed = job.run(c, str(tmp_path / "b"))
    assert resumed["sha256"] == straight["sha256"]  # bit-identical parameters
    assert resumed["latents_mean"] == straight["latents_mean"]
    a = export.load_model(straight["export_dir"])
    rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert {r["step"] for r in rows if "loss" in r} == {1, 2, 3, 4}
    # The exported model carries the trained latents' statistics.
    assert a.config.latents_mean == tuple(np.float32(straight["latents_mean"]).tolist())
    assert a.config.latents_std != (1.0,) * 4 and min(a.config.latents_std) > 0


def test_bad_config_names_the_key(tmp_path):
    import configs.vae_toy as vae_toy  # noqa: PLC0415

    c = vae_toy.get_config()
    c.train.stepz = 3
    with pytest.raises(ValueError, match="train.stepz"):
        job.run(c, str(tmp_path))
    c = vae_toy.get_config()
    c.eval.num_clips = 5
    with pytest.raises(ValueError, match="eval.num_clips"):
        job.run(c, str(tmp_path))


def test_crops_depend_on_seed_and_step_only():
    v = np.random.default_rng(0).integers(0, 256, (3, 9, 16, 24, 3), dtype=np.uint8)
    s = CropSampler(v, 4, 5, 8, seed=1)
    a, b = s(7), CropSampler(v, 4, 5, 8, seed=1)(7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 3, 5, 8, 8) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1
    assert not np.array_equal(s(8), a)
    # Every crop is a window of some clip (possibly mirrored).
    win = np.lib.stride_tricks.sliding_window_view(toyworld_tfds.video_to_model(v), (5, 8, 8), axis=(2, 3, 4))
    win = win.transpose(0, 2, 3, 4, 1, 5, 6, 7)  # (clip, t0, y0, x0, C, 5, 8, 8)
    for crop in a:
        hits = [np.any(np.all(win == c, axis=(4, 5, 6, 7))) for c in (crop, crop[..., ::-1])]
        assert any(hits)
    with pytest.raises(ValueError, match="crop_frames"):
        CropSampler(v, 4, 4, 8, seed=1)
    with pytest.raises(ValueError, match="crop_size"):
        CropSampler(v, 4, 5, 12, seed=1)


def test_recolour_keeps_grey_levels_and_spreads_chroma():
    rng = np.random.default_rng(0)
    grey = np.broadcast_to(np.linspace(-0.5, 0.5, 8, dtype=np.float32)[None, None, None, None], (16, 3, 2, 4, 8))
    out = recolour(np.ascontiguousarray(grey), rng)
    assert out.shape == grey.shape and out.min() >= -1 and out.max() <= 1
    chroma = out - out.mean(1, keepdims=True)
    # A grey clip gets one colour cast per clip (the same on every pixel), of varying strength across clips.
    np.testing.assert_allclose(chroma, np.broadcast_to(chroma[..., :1, :1, :1], chroma.shape), atol=1e-5)
    strength = np.linalg.norm(chroma[:, :, 0, 0, 0], axis=1)
    assert strength.max() > 0.2 and strength.min() < strength.max() / 2
    # Grey levels survive (up to the clipping at ±1).
    np.testing.assert_allclose(out.mean(1), grey.mean(1), atol=1e-5)
    # Colours change hue: a pure red clip is no longer red-dominant in some clips.
    red = np.zeros((16, 3, 1, 2, 2), np.float32)
    red[:, 0] = 0.6
    out = recolour(red, rng)
    assert (out[:, 0, 0, 0, 0] < out[:, 1:, 0, 0, 0].max(1)).any()
    s = CropSampler(np.zeros((2, 5, 8, 8, 3), np.uint8) + 128, 4, 5, 8, seed=0, colour_prob=1.0)
    np.testing.assert_array_equal(s(3), s(3))
    with pytest.raises(ValueError, match="colour_prob"):
        CropSampler(np.zeros((2, 5, 8, 8, 3), np.uint8), 4, 5, 8, seed=0, colour_prob=1.5)


def test_object_psnr_pools_the_object_pixels():
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    objects = rng.random((2, 5, 8, 8)) < 0.25
    err = jnp.asarray(np.where(objects[:, None], 0.1, 0.01).astype(np.float32))  # object pixels off by 0.1

    def eval_fn(params, video):  # a fake model that knows its error map
        return psnr(video + err, video), ssim(video, video), None, video + err

    out = job.evaluate(eval_fn, None, videos, 2, objects)
    np.testing.assert_allclose(out["psnr_objects"], 10 * np.log10(4 / 0.01), atol=1e-3)  # from 0.1² alone
    assert out["psnr"] < out["psnr_objects"] + 10
    assert "psnr_objects" not in job.evaluate(eval_fn, None, videos, 2)


def test_psnr_ssim():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-0.8, 0.8, (2, 3, 2, 24, 24)).astype(np.float32))
    noise = jnp.asarray(rng.normal(0, 0.02, x.shape).astype(np.float32))
    expected = 10 * np.log10(4 / np.mean(np.asarray(noise) ** 2, axis=(1, 2, 3, 4)))
    np.testing.assert_allclose(psnr(x + noise, x), expected, rtol=1e-5)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-5)
    assert float(ssim(x + 10 * noise, x).mean()) < float(ssim(x + noise, x).mean()) < 0.9999
    assert float(ssim(-x, x).mean()) < 0.1


def test_export_round_trip_and_checks(tmp_path):
    cfg = WanVAEConfig.tiny21(base_dim=4, z_dim=4, latents_mean=(0.1, 0.2, 0.3, 0.4), latents_std=(1, 2, 3, 4))
    vae = WanVAE(cfg, rngs=nnx.Rngs(3))
    m = export.save_model(str(tmp_path), vae, {"steps": 0})
    back = export.load_model(str(tmp_path))
    assert back.config.latents_std == (1.0, 2.0, 3.0, 4.0) and m["bytes"] > 0
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 3, 5, 16, 16)).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(back.encode(x)[0]), np.asarray(vae.encode(x)[0]))
    man = json.load(open(tmp_path / "manifest.json"))
    man["model"]["base_dim"] = 8
    json.dump(man, open(tmp_path / "manifest.json", "w"))
    with pytest.raises(ValueError, match="does not fit"):
        export.load_model(str(tmp_path))
    with open(tmp_path / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        export.load_model(str(tmp_path))


def test_zoo_registry():
    assert zoo.VIDEO == (17, 64, 64) and (zoo.VIDEO[0] - 1) % 4 == 0
    with pytest.raises(KeyError, match="unknown model"):
        zoo.load("nope")
