"""The shipped toy DiT and text encoder (zoo.load("dit"), zoo.load("text")): on held-out toyworld clips (encoded by
the shipped VAE, captioned by the shipped encoder) the flow-matching loss is far below a random DiT's — the check
that catches a broken or swapped DiT, text encoder or VAE; the manifest records the held-out loss and the base
model's mix of smooth and jittered samples (tools/dit_mix.py).

Skipped, with the reason shown, until vggrpo_jax/zoo/weights/{dit,text,vae}/ are shipped."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vggrpo_jax import zoo
from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.data.toyworld_clips import load_split
from vggrpo_jax.sft.flow_matching import FlowMatchingConfig, flow_matching_loss, noisy_latents, sample_sigmas

SHIPPED = all(os.path.isfile(os.path.join(zoo.weights_dir(n), "manifest.json")) for n in ("dit", "text", "vae"))
pytestmark = pytest.mark.skipif(not SHIPPED, reason="zoo DiT not shipped yet: " + zoo.REGISTRY["dit"][1])

NUM_CLIPS, REPEATS = 8, 4


@pytest.fixture(scope="module")
def heldout():
    """Normalized latents (N, C, F', H', W') and caption embeddings of the first held-out clips."""
    split = load_split("heldout", NUM_CLIPS, source="render", data_config="zoo")
    clips = [split[i] for i in range(len(split))]
    vae = zoo.load("vae")
    video = jnp.asarray(np.stack([T.video_to_model(c["video"]) for c in clips]))
    z = nnx.jit(lambda m, v: m.normalize_latents(m.encode(v)[0]))(vae, video)
    emb = zoo.load("text").encode([c["caption"] for c in clips])[0]
    return np.asarray(z), emb


def _fm_loss(dit, z, emb) -> float:
    """Mean flow-matching loss over REPEATS fixed (σ, ε) draws per clip (the job's Wan schedule and shift)."""
    fm = FlowMatchingConfig(**zoo.manifest("dit")["config"]["finetune"]["flow"])

    @nnx.jit
    def one(m, x0, e, key):
        k1, k2 = jax.random.split(key)
        sigma, t = sample_sigmas(k1, x0.shape[0], fm)
        xt, target = noisy_latents(x0, jax.random.normal(k2, x0.shape), sigma)
        return flow_matching_loss(m(xt, t, e), target)[0]

    return float(np.mean([one(dit, jnp.asarray(z), jnp.asarray(emb), jax.random.key(r)) for r in range(REPEATS)]))


def test_manifest_records_loss_and_mix():
    m = zoo.manifest("dit")
    assert m["heldout"]["heldout_fm_loss"] > 0 and m["data"]["num_train"] >= 1024
    mix = m["heldout"]["mix"]
    assert mix["sets"]["samples"]["n"] >= 64 and mix["threshold_accuracy"]["recon"] >= 0.9


@pytest.mark.xfail(strict=True, reason="shipped DiT (1.26 M parameters, 4000 steps): 64 of 64 ODE samples score as "
                   "jittery against 27 of 64 data clips — it does not reproduce the data's mix yet")
def test_base_model_reproduces_the_data_mix():
    mix = zoo.manifest("dit")["heldout"]["mix"]
    assert abs(mix["sets"]["samples"]["jittery_fraction"] - mix["data_jittered_fraction"]) <= 0.15


def test_shipped_dit_beats_random_weights(heldout):
    z, emb = heldout
    dit = zoo.load("dit")
    trained = _fm_loss(dit, z, emb)
    rand = _fm_loss(type(dit)(dit.config, nnx.Rngs(7)), z, emb)
    assert trained < 0.7 * rand, (trained, rand)
    assert abs(trained - zoo.manifest("dit")["heldout"]["heldout_fm_loss"]) < 0.25


def test_captions_matter(heldout):
    """The text path is live: the loss with the right captions is below the loss with the captions rolled."""
    z, emb = heldout
    dit = zoo.load("dit")
    assert _fm_loss(dit, z, emb) < _fm_loss(dit, z, np.roll(emb, 1, axis=0))


def test_grpo_backbones_load_the_shipped_dit_and_text(heldout):
    """A GRPO config naming "zoo:dit" / "zoo:text" gets the shipped weights: the policy with its adapters off
    computes the shipped DiT's velocity on 8 simulated devices, and the text encoder the shipped embeddings."""
    from vggrpo_jax.backbones import build_policy, build_text_encoder
    from vggrpo_jax.config import base_config
    from vggrpo_jax.errors import ConfigError
    from vggrpo_jax.parallel.mesh import make_mesh

    z, emb = heldout
    c = base_config()
    c.dit.checkpoint, c.text.checkpoint = "zoo:dit", "zoo:text"
    c.dit.dtype = c.dit.param_dtype = c.text.dtype = "float32"
    c.text.max_length = zoo.manifest("text")["max_length"]
    c.lora.rank, c.lora.alpha = 4, 8.0
    mesh = make_mesh({"data": 1, "fsdp": -1, "context": 1, "tensor": 1})
    policy = build_policy(c, mesh, text_dim=emb.shape[-1], latent_channels=z.shape[1])
    t = jnp.full((z.shape[0],), 500, jnp.int32)
    got = jax.jit(policy.reference_velocity)(policy.lora, policy.frozen, jnp.asarray(z), t, {"emb": jnp.asarray(emb)})
    want = nnx.jit(lambda m, x, tt, e: m(x, tt, e))(zoo.load("dit"), jnp.asarray(z), t, jnp.asarray(emb))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)

    split = load_split("heldout", 2, source="render", data_config="zoo")
    captions = [split[i]["caption"] for i in range(2)]
    text = build_text_encoder(c, "/nonexistent-unused", None, captions)
    np.testing.assert_allclose(np.asarray(text.encode(captions)[0]), emb[:2], rtol=1e-5, atol=1e-5)
    c.text.max_length = 512
    with pytest.raises(ConfigError, match=r"config\.text\.max_length=512: the zoo's text encoder pads to"):
        build_text_encoder(c, "/nonexistent-unused", None, captions)
    c.text.max_length, c.lora.rank = zoo.manifest("text")["max_length"], 0
    with pytest.raises(ValueError, match="LoRA"):
        build_policy(c, mesh, text_dim=emb.shape[-1], latent_channels=z.shape[1])
