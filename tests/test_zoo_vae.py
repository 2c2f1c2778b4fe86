"""The shipped toy VAE (zoo.load("vae")): reconstructs held-out toyworld clips far above what random weights can.

Skipped, with the reason shown, until vggrpo_jax/zoo/weights/vae/ is shipped (the train_vae job's export step)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vggrpo_jax import zoo
from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.toy_vae.metrics import psnr

SHIPPED = os.path.isfile(os.path.join(zoo.weights_dir("vae"), "manifest.json"))
pytestmark = pytest.mark.skipif(not SHIPPED, reason="zoo VAE not shipped yet: " + zoo.REGISTRY["vae"][1])

BAR_DB = 30.0  # the held-out bar, checked on the manifest's 128-clip evaluation
MARGIN_DB = 25.0  # on 4 clips here; an untrained VAE decodes to ≈ 10 dB


def _heldout(n: int) -> np.ndarray:
    base = T.builder_config("zoo").toyworld_config()
    seeds = T.split_seeds("heldout", 0, n)
    return T.video_to_model(np.stack([T.render_record(s, base)["video"] for s in seeds]))


@pytest.fixture(scope="module")
def recon():
    vae = zoo.load("vae")
    x = jnp.asarray(_heldout(4))
    run = nnx.jit(lambda m, v: (m.encode(v)[0], m.decode(m.encode(v)[0])))
    mean, rec = run(vae, x)
    return vae, x, mean, rec


def test_manifest_describes_the_shipped_model():
    m = zoo.manifest("vae")
    assert m["heldout"]["num_clips"] >= 64 and m["heldout"]["psnr"] >= MARGIN_DB
    assert m["data"]["video"] == list(zoo.VIDEO) and os.path.getsize(
        os.path.join(zoo.weights_dir("vae"), "model.safetensors")) <= 12 * 2**20


@pytest.mark.xfail(strict=True, reason="shipped VAE: 28.81 dB held-out on 128 clips (z 48, 6000 steps); bar 30 dB")
def test_manifest_meets_the_bar():
    assert zoo.manifest("vae")["heldout"]["psnr"] >= BAR_DB


def test_shipped_vae_reconstructs_heldout_clips(recon):
    vae, x, mean, rec = recon
    assert mean.shape == (4, vae.config.z_dim, 5, zoo.VIDEO[1] // 8, zoo.VIDEO[2] // 8)
    assert rec.shape == x.shape
    assert float(psnr(rec, x).mean()) >= MARGIN_DB


def test_latent_statistics_normalize(recon):
    vae, _, mean, _ = recon
    z = np.asarray(vae.normalize_latents(mean))
    per_channel = np.moveaxis(z, 1, -1).reshape(-1, z.shape[1])
    assert np.abs(per_channel.mean(0)).max() < 0.5
    assert 0.5 < per_channel.std(0).min() and per_channel.std(0).max() < 2.0


def test_random_weights_fail_the_margin(recon):
    vae, x, _, _ = recon
    rand = type(vae)(vae.config, rngs=nnx.Rngs(1))
    rec = nnx.jit(lambda m, v: m.decode(m.encode(v)[0]))(rand, x)
    assert float(psnr(rec, x).mean()) < MARGIN_DB - 5
