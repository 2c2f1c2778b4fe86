"""Flow-matching fine-tuning: the objective on the Wan schedule, exact resume of the job, and learning."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax.data.toyworld import make_prompts
from vggrpo_jax.rl.schedule import wan_sigmas
from vggrpo_jax.sft.config import sft_base_config
from vggrpo_jax.sft.flow_matching import (FlowMatchingConfig, flow_matching_loss, noisy_latents, sample_sigmas,
                                          shift_sigma)
from vggrpo_jax.sft.job import latent_identity, run, validate

LATENT = (4, 3, 4, 4)  # (C, F', H', W') for the tiny Wan preset: 9 frames of 32×32


def test_sigmas_follow_the_wan_shift_and_timesteps_truncate():
    cfg = FlowMatchingConfig(shift=3.0)
    sigma, t = sample_sigmas(jax.random.key(0), 4096, cfg)
    sigma, t = np.asarray(sigma), np.asarray(t)
    assert sigma.min() > 0 and sigma.max() <= 1.0
    exact = np.trunc(sigma.astype(np.float64) * 1000).astype(np.int32)  # rl.schedule.timesteps' float64 product
    assert np.all(np.abs(t - exact) <= 1) and np.mean(t == exact) > 0.99  # float32 in jit: ±1 at exact boundaries
    # The sampler's grid (rl.schedule.wan_sigmas) is the same map on a linspace: shift_sigma reproduces it.
    raw = np.linspace(0.0, 0.999, 21)
    np.testing.assert_allclose(np.sort(np.asarray(shift_sigma(raw, 3.0)))[::-1][:-1], wan_sigmas(20, 3.0)[:-1],
                               rtol=1e-6)
    # Shift 3 puts half of the mass above σ = 0.75 (u = 0.5 ↦ 0.75); shift 1 is uniform.
    assert abs(np.mean(sigma > 0.75) - 0.5) < 0.03
    s1, _ = sample_sigmas(jax.random.key(0), 4096, FlowMatchingConfig(shift=1.0))
    assert abs(float(np.mean(np.asarray(s1) > 0.75)) - 0.25) < 0.03
    ln, _ = sample_sigmas(jax.random.key(1), 4096, FlowMatchingConfig(shift=1.0, time_sampling="logit_normal"))
    assert abs(float(np.median(np.asarray(ln))) - 0.5) < 0.03 and float(np.mean(np.abs(np.asarray(ln) - 0.5) < 0.25)) > 0.6
    with pytest.raises(ValueError, match="time_sampling"):
        FlowMatchingConfig(time_sampling="cosine")


def test_interpolation_and_loss():
    x0 = jax.random.normal(jax.random.key(0), (3, 4, 2, 2, 2))
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    sigma = jnp.asarray([0.0, 0.5, 1.0])
    xt, v = noisy_latents(x0, eps, sigma)
    np.testing.assert_allclose(xt[0], x0[0], atol=1e-6)
    np.testing.assert_allclose(xt[2], eps[2], atol=1e-6)
    np.testing.assert_allclose(xt[1] + 0.5 * v[1], eps[1], atol=1e-6)  # moving along v by Δσ reaches the noise
    loss, per = flow_matching_loss(v, v)
    assert float(loss) == 0.0 and per.shape == (3,)
    loss, per = flow_matching_loss(v + 1.0, v)
    np.testing.assert_allclose(per, 1.0, rtol=1e-6)


def _config(num_steps: int, lr: float = 3e-3):
    c = sft_base_config()
    c.allow_random_init = True
    c.mesh.fsdp = -1
    c.dit.preset = "tiny"
    c.dit.dtype = c.dit.param_dtype = "float32"
    c.dit.remat_policy = "none"
    c.lora.rank = 0
    c.finetune.mode = "full"
    c.finetune.caption_dropout = 0.25
    c.text.max_length = 48
    c.text.dtype = "float32"
    c.text.toy_dim = 16
    c.data.source = "toyworld"
    c.data.num_train, c.data.num_heldout = 8, 8
    c.data.num_frames, c.data.height, c.data.width = 9, 32, 32
    c.optim.lr = lr
    c.train.num_steps = num_steps
    c.train.batch_size = 8
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 0
    c.train.eval_clips = 8
    c.train.eval_repeats = 4
    return c


def _write_latents(c, workdir: str) -> None:
    """Latent caches the job reads instead of encoding: per clip one level per channel (std 1.5) plus a little
    texture — a data set a tiny DiT can fit in tens of steps."""
    root = os.path.join(workdir, "latents")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    base = 1.5 * rng.standard_normal((8, LATENT[0], 1, 1, 1)) + 0.1 * rng.standard_normal((8,) + LATENT)
    base = np.ascontiguousarray(base, dtype=np.float32)
    captions = make_prompts(8, seed=0)
    for split, n in (("train", int(c.data.num_train)), ("heldout", int(c.data.num_heldout))):
        # held-out = the same 8 clips: the overfit case measures fitting, the loss the job reports is on them
        np.save(os.path.join(root, f"{split}.npy"), base[:n])
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump({"identity": latent_identity(c, split, n), "captions": captions[:n],
                       "ids": [f"synthetic:{i}" for i in range(n)]}, f)


def _params(result):
    return jax.tree.leaves(jax.device_get(result["state"]["params"]))


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    for d in (straight, resumed):
        _write_latents(_config(4), d)
    full = run(_config(4), straight)
    run(_config(2), resumed)  # stops at step 2 with a checkpoint, as an interrupted run would
    again = run(_config(4), resumed)
    # Bit-equal on this machine run by run; in CI (two pytest workers, XLA:CPU's threaded reductions) elements
    # have differed after 4 steps: 1 of 24 by 1 ulp once, and 4 of 48 by up to 1.4e-6 relative (4.2e-9 absolute)
    # on a loaded machine. One training step more or less moves every parameter array by ≥ 3e-3 relative (measured:
    # 4 against 3 steps), so the check allows a few float32 roundings and no replayed or skipped step.
    for a, b in zip(_params(full), _params(again)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(full["heldout_fm_loss"], again["heldout_fm_loss"], rtol=1e-6)


def test_export_ships_the_dit_and_its_toy_text_encoder(tmp_path):
    """The exported DiT holds the trained parameters; the exported text encoder (tokenizer + weights) embeds prompts
    exactly as the encoder the job trained with (rebuilt here from the same workdir tokenizer and seed)."""
    from flax import nnx  # noqa: PLC0415

    from vggrpo_jax import backbones  # noqa: PLC0415
    from vggrpo_jax.data.toy_text import load_text  # noqa: PLC0415
    from vggrpo_jax.sft.export import load_dit  # noqa: PLC0415

    workdir = str(tmp_path / "run")
    c = _config(2)
    c.export.text_dir = str(tmp_path / "text")
    _write_latents(c, workdir)
    out = run(c, workdir)
    dit = load_dit(os.path.join(workdir, "export"))
    with open(os.path.join(workdir, "export", "manifest.json")) as f:  # which VAE's latents it learned
        assert json.load(f)["data"]["vae"] == {k: str(v) for k, v in dict(c.vae).items()}
    shipped = jax.tree.leaves(nnx.state(dit, nnx.Param))
    trained = jax.tree.leaves(jax.device_get(out["state"]["params"]))
    assert len(shipped) == len(trained)
    for a, b in zip(sorted(shipped, key=lambda x: (x.shape, float(np.sum(x)))),
                    sorted(trained, key=lambda x: (x.shape, float(np.sum(x))))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    text = load_text(str(tmp_path / "text"), batch_size=2)
    prompts = ["A red cube on a checkered floor, the camera orbits", ""]
    again = backbones.build_text_encoder(c, workdir, None, make_prompts(8, seed=0) + [""])
    got, want = text.encode(prompts), again.encode(prompts)
    for a, b in zip(got, want):  # batch sizes differ (2 vs the config's): float32 reduction order only
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(np.abs(got[0][0]).sum()) > 0


def test_loss_falls_on_a_tiny_overfit_case(tmp_path):
    workdir = str(tmp_path / "fit")
    c = _config(80, lr=1e-2)
    _write_latents(c, workdir)
    out = run(c, workdir)
    # A model that ignores its inputs (x_σ, t, text) predicts at best a constant velocity; the best constant,
    # E[ε − x0], leaves 1 + Var(x0) (≈ 2.5 here). The randomly initialised DiT starts above it; after 80 steps the
    # held-out loss (on these same 8 clips) is below half of it (measured 0.79 vs 2.48).
    base = np.load(os.path.join(workdir, "latents", "heldout.npy"))
    best_constant = 1.0 + float(np.mean(np.var(base, axis=0)))
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    first = [r["loss"] for r in rows if "loss" in r][:3]
    assert np.mean(first) > 0.9 * best_constant
    assert out["heldout_fm_loss"] < 0.5 * best_constant, (out["heldout_fm_loss"], best_constant)


def test_config_errors_name_the_key():
    c = _config(2)
    c.finetune.mode = "dpo"
    with pytest.raises(ValueError, match="finetune.mode"):
        validate(c)
    c = _config(2)
    c.lora.rank = 4
    with pytest.raises(ValueError, match="lora.rank"):
        validate(c)
    c = _config(2)
    c.mix.samples = 8  # no trained VAE to decode the samples with
    with pytest.raises(ValueError, match="mix.samples"):
        validate(c)
    c = _config(2)
    c.data.num_frames = 10
    with pytest.raises(ValueError, match="data.num_frames"):
        validate(c)
