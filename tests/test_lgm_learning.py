"""The LGM at toyworld scale (tiny Wan2.1-style VAE, tiny Any4D with random weights as the teacher).

One module-scoped pipeline: teacher cache → stitching search over ℓ → alignment fine-tuning (with a stop/resume
run) → save/load → agreement and robustness reports. Tests check what must hold: the fitted connector's held-out
feature error (the alignment error the stitching search ranks ℓ by) is < 20% of the untrained one's, ℓ̂ is the curve's argmin, L_align drops, a resumed run equals an
uninterrupted one, the evaluate code's reports are consistent, and a saved LGM reloads to identical outputs.

Calibration set. 160 training and 16 held-out toyworld clips with checkers of 1.0 world unit. The tiny VAE is
random, not trained: it keeps an arbitrary 16-number projection of each 8×8×4 pixel block, so pixel detail finer
than a latent cell (the default 0.5-unit checkers are 2-4 pixels wide at this resolution) cannot be predicted from
the latents at all. Measured held-out feature-error ratios (fitted / untrained, ℓ = 1 and 3, 300 steps):
20 training clips 0.21 / 0.23 (the 5×5×5 conv over-fits: train 0.18 vs held-out 0.39 unexplained); 160 clips
0.184 / 0.191 with 0.5-unit checkers, 0.171 / 0.180 with 1.0-unit checkers. Output alignment (L_align) after the
stitching fit is ~26% of the untrained connector's and fine-tuning lowers it a little further (~24%): the teacher's
heads amplify the ~30% of feature variance that the latents of a random VAE do not carry.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vggrpo_jax  # noqa: F401
from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
from vggrpo_jax.lgm.data import ToyworldClips, build_teacher_cache, make_target_fn, split_heldout
from vggrpo_jax.lgm.evaluate import agreement_report, jit_module, make_reward_fn, robustness_report
from vggrpo_jax.lgm.finetune import finetune, heldout_alignment
from vggrpo_jax.lgm.host_init import random_any4d, random_init
from vggrpo_jax.lgm.loop import LGM_OPTIM
from vggrpo_jax.lgm.model import LatentGeometryModel, load_lgm, save_lgm
from vggrpo_jax.lgm.pipeline import cached_teacher_geometry
from vggrpo_jax.lgm.rgb_path import RGBGeometryPath
from vggrpo_jax.lgm.stitching import plot_curve, stitching_search
from vggrpo_jax.models.any4d import Any4DConfig
from vggrpo_jax.models.wan.vae import WanVAE
from vggrpo_jax.models.wan.vae_config import WanVAEConfig

LAYERS = (1, 3)
WEIGHTS = {"translation": 1.0, "rotation": 1.0, "depth": 1.0, "points": 1.0, "scene_flow": 1.0}
ALIGN_STEPS = 40
NUM_CLIPS, NUM_HELDOUT = 176, 16
STITCH_STEPS = 300
ANY4D_CFG = dict(lora_rank=4, lora_alpha=4.0)


def _any4d(**overrides):
    # A random teacher (host-side init: seconds instead of eager initialiser compiles).
    return random_any4d(Any4DConfig.tiny(**{**ANY4D_CFG, **overrides}), 1)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgm")
    vae = random_init(lambda: WanVAE(WanVAEConfig.tiny21(), nnx.Rngs(0)), 0)
    any4d = _any4d()
    # 9 frames at 64x64 → 3 latent frames of 8x8 → 3 views of 4x4 tokens → teacher frames 56x56.
    clips = ToyworldClips(NUM_CLIPS, seed=100, num_frames=9, height=64, width=64, checker_size=1.0)
    train_src, held_src = split_heldout(clips, NUM_HELDOUT / NUM_CLIPS)
    target_fn = make_target_fn(vae, any4d, LAYERS, spatial_stride=2, view_frame_rule="last")
    identity = {"test": "tiny", "layers": LAYERS}
    kw = dict(identity=identity, batch_size=4, shard_size=8, progress=False)
    train = build_teacher_cache(str(root / "cache/train"), train_src, target_fn, **kw)
    held = build_teacher_cache(str(root / "cache/heldout"), held_src, target_fn, **kw)
    stitch = stitching_search(
        train=train, heldout=held, variants={"conv": ConnectorConfig()}, layers=LAYERS, latent_channels=16,
        any4d_config=any4d.config, steps=STITCH_STEPS, batch_size=4, optim=dataclasses.replace(LGM_OPTIM, lr=3e-3, warmup_steps=10),
        seed=0, workdir=str(root / "stitch"), progress=False,
    )
    untrained = build_connector(ConnectorConfig(), latent_channels=16, any4d_config=any4d.config,
                                stitch_layer=stitch.best_layer, seed=0)
    align_untrained = heldout_alignment(LatentGeometryModel(untrained, any4d), held, WEIGHTS)
    lgm0 = LatentGeometryModel(stitch.best, any4d)
    align_stitched = heldout_alignment(lgm0, held, WEIGHTS)
    ft = dict(steps=ALIGN_STEPS, batch_size=4, optim=dataclasses.replace(LGM_OPTIM, lr=5e-4, warmup_steps=8), weights=WEIGHTS, seed=0,
              train_lora=True, progress=False)
    lgm, result = finetune(lgm0, train, **ft)
    return dict(root=root, vae=vae, any4d=any4d, train=train, held=held, stitch=stitch, lgm=lgm, result=result,
                lgm0=lgm0, ft=ft, align_untrained=align_untrained, align_stitched=align_stitched,
                align_after=heldout_alignment(lgm, held, WEIGHTS), target_fn=target_fn, kw=kw, held_src=held_src)


def test_cache_runs_teacher_once_and_checks_fingerprint(pipe):
    held = pipe["held"]
    assert len(pipe["train"]) == NUM_CLIPS - NUM_HELDOUT and len(held) == NUM_HELDOUT
    m = held.manifest
    assert m["shapes"]["latents"] == [16, 3, 8, 8] and m["shapes"]["tokens_l3"] == [3 * 16 + 1, 64]
    assert m["shapes"]["hook0"] == [3, 16, 384] and m["shapes"]["out_depth_z"] == [3, 56, 56]
    assert all(v > 0 for v in held.variances.values())
    # Re-opening with the same identity reuses the cache; another identity is refused with a message.
    again = build_teacher_cache(held.directory, pipe["held_src"], pipe["target_fn"], **pipe["kw"])
    np.testing.assert_array_equal(again.get(0, ["latents"])["latents"], held.get(0, ["latents"])["latents"])
    with pytest.raises(ValueError, match="different setup"):
        build_teacher_cache(held.directory, pipe["held_src"], pipe["target_fn"],
                            **{**pipe["kw"], "identity": {"other": 1}})


def test_stitching_curve_and_argmin(pipe):
    stitch = pipe["stitch"]
    curve = stitch.curve["conv"]
    assert sorted(curve) == list(LAYERS)
    scores = {l: curve[l]["criterion"] for l in LAYERS}
    assert all(np.isfinite(list(scores.values())))
    assert stitch.best_layer == min(scores, key=scores.get)
    saved = json.loads((pipe["root"] / "stitch" / "curve.json").read_text())
    assert saved["best_layer"] == stitch.best_layer and set(saved["curve"]["conv"]) == {str(l) for l in LAYERS}
    png = pipe["root"] / "curve.png"
    plot_curve(stitch, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


FEATURE_RATIO = 0.2  # the criterion (measured 0.171 at ℓ=1, 0.180 at ℓ=3)
OUTPUT_RATIO = 0.35  # L_align of the stitched LGM (measured 0.26; see the module doc)


def test_learning_feature_alignment(pipe):
    """Held-out relative feature error after fitting < 20% of the untrained connector's, at every ℓ."""
    stitch = pipe["stitch"]
    for l in LAYERS:
        fitted, init = stitch.curve["conv"][l], stitch.untrained["conv"][l]
        print(f"ℓ={l}: fitted {fitted} untrained {init} ratio {fitted['tokens'] / init['tokens']:.3f}")
        assert fitted["tokens"] < FEATURE_RATIO * init["tokens"], (l, fitted, init)
        for key in init:  # hook-0 features and the taps below ℓ improve too
            assert fitted[key] < init[key], (l, key, fitted, init)
    assert stitch.best.stitch_layer == stitch.best_layer


def test_learning_output_alignment(pipe):
    """Held-out L_align: stitched connector < 35% of the untrained one's; fine-tuning lowers it further."""
    untrained, stitched, after = pipe["align_untrained"], pipe["align_stitched"], pipe["align_after"]
    print(f"L_align held-out: untrained {untrained['loss']:.4f} stitched {stitched['loss']:.4f} "
          f"fine-tuned {after['loss']:.4f}")
    assert stitched["loss"] < OUTPUT_RATIO * untrained["loss"], (stitched, untrained)
    assert after["loss"] < stitched["loss"], (after, stitched)


def test_alignment_resume_equals_uninterrupted(pipe):
    ckpt = str(pipe["root"] / "align_ckpt")
    _, first = finetune(pipe["lgm0"], pipe["train"], **pipe["ft"], ckpt_dir=ckpt, save_every=4, stop_after=8)
    assert first.step == 8 and not first.finished
    resumed, second = finetune(pipe["lgm0"], pipe["train"], **pipe["ft"], ckpt_dir=ckpt, save_every=4)
    assert second.finished and second.step == ALIGN_STEPS
    full = nnx.state(pipe["lgm"], nnx.Param)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(nnx.state(resumed, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_agreement_and_robustness_reports(pipe):
    lgm, held = pipe["lgm"], pipe["held"]
    rgb = RGBGeometryPath(pipe["vae"], pipe["any4d"], spatial_stride=2)
    lgm_fn, rgb_fn = jit_module(lgm), jit_module(rgb)
    keys = ["latents"] + [k for k in held.keys if k.startswith("out_")]
    batch = held.all(keys)
    report = agreement_report(lgm_fn, rgb_fn, [batch], reward_fn=make_reward_fn({"use_scene_flow": False}),
                              teacher_fn=cached_teacher_geometry)
    # Trained, the LGM agrees with the teacher (on the original frames) better than with an untrained connector.
    untrained = build_connector(ConnectorConfig(), latent_channels=16, any4d_config=pipe["any4d"].config,
                                stitch_layer=lgm.stitch_layer, seed=0)
    untrained_fn = jit_module(LatentGeometryModel(untrained, pipe["any4d"]))
    base = agreement_report(untrained_fn, untrained_fn, [batch],
                            reward_fn=make_reward_fn({"use_scene_flow": False}), teacher_fn=cached_teacher_geometry)
    print("agreement trained:", {k: report[k] for k in ("vs_rgb", "vs_teacher", "rgb_vs_teacher")},
          "spearman vs RGB", report["spearman_motion"], report["spearman_geo"],
          "vs teacher", report["spearman_motion_vs_teacher"], report["spearman_geo_vs_teacher"])
    print("agreement untrained:", base["vs_teacher"])
    for metric in ("rot_deg", "trans"):
        assert report["vs_teacher"][metric] < base["vs_teacher"][metric], metric
    for ref in ("vs_rgb", "vs_teacher"):
        assert 0 <= report[ref]["rot_deg"] <= 180 and report[ref]["depth_absrel"] >= 0
    assert report["num_clips"] == NUM_HELDOUT and len(report["rewards"]["lgm_motion"]) == NUM_HELDOUT
    for name in ("motion", "geo"):  # a NaN (e.g. a teacher without forward rays: r_geo = −inf everywhere) fails
        assert -1 <= report[f"spearman_{name}"] <= 1 and -1 <= report[f"spearman_{name}_vs_teacher"] <= 1, name
    # The metric is the one the evaluate code computes: the LGM against itself agrees exactly.
    self_report = agreement_report(lgm_fn, lgm_fn, [batch], reward_fn=make_reward_fn({"use_scene_flow": False}))
    assert self_report["vs_rgb"]["rot_deg"] < 1e-3 and self_report["vs_rgb"]["depth_absrel"] == 0
    assert self_report["spearman_motion"] == pytest.approx(1.0)

    rows = robustness_report(lgm_fn, rgb_fn, jnp.asarray(batch["latents"][:4]), [0.0, 0.3, 1.0], batch_size=4)
    assert [r["sigma"] for r in rows] == [0.0, 0.3, 1.0]
    assert rows[0]["lgm"]["depth_absrel"] == 0 and rows[0]["rgb"]["depth_absrel"] == 0
    for path in ("lgm", "rgb"):
        drift = [r[path]["depth_absrel"] for r in rows]
        assert drift[0] < drift[1] < drift[2], (path, drift)
    print("robustness:", [(r["sigma"], r["lgm"], r["rgb"]) for r in rows])


def test_save_load_roundtrip(pipe):
    lgm = pipe["lgm"]
    path = str(pipe["root"] / "saved_lgm")
    save_lgm(path, lgm, extra={"note": "test"})
    with pytest.raises(FileExistsError):
        save_lgm(path, lgm)
    loaded = load_lgm(path, _any4d())  # same base weights (seeded), LoRA and connector from the checkpoint
    assert loaded.stitch_layer == lgm.stitch_layer
    z = jnp.asarray(pipe["held"].get(0, ["latents"])["latents"])[None]
    a, b = jit_module(lgm)(z), jit_module(loaded)(z)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.depth.shape == (1, 3, 56, 56) and a.c2w.shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="different sizes"):
        load_lgm(path, _any4d(lora_rank=8))
    meta = json.loads(open(os.path.join(path, "lgm.json")).read())
    assert meta["note"] == "test" and meta["stitch_layer"] == lgm.stitch_layer and meta["has_lora"]
