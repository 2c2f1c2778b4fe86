"""LGM construction config: defaults (Wan2.1 + full Any4D, the paper's recipe where known) and validation.

Values marked "reported" come from secondary sources on the paper (see /docs and vggrpo.md): the single 5×5×5 conv
connector with stride 1×2×2 and padding 2, LoRA rank 64 / α 32 on the geometry transformer, AdamW lr 2e−4 without
weight decay, 100 warm-up steps then cosine decay, grad clip 1.0, 20 epochs. Each is a config option.
"""

from __future__ import annotations

from typing import Any

from ml_collections import ConfigDict

from vggrpo_jax.config import (ANY4D_PRESETS, MIN_VIEWS_MOTION, VAE_PRESETS, base_config, check_finite, check_num_frames,
                               check_paths)
from vggrpo_jax.errors import ConfigError
from vggrpo_jax.lgm.align import FEATURE_CRITERIA, MODALITIES
from vggrpo_jax.lgm.connector import ConnectorConfig
from vggrpo_jax.lgm.correspondence import VIEW_FRAME_RULES
from vggrpo_jax.training import OptimConfig



def _optim(**overrides: Any) -> ConfigDict:
    d = dict(lr=2e-4, warmup_steps=100, schedule="cosine", end_lr_fraction=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
             grad_clip=1.0)
    d.update(overrides)
    return ConfigDict(d)


def lgm_base_config() -> ConfigDict:
    """Wan2.1 latents (81×480×832 → 21 views of 30×52 tokens) stitched to the full Any4D."""
    g = base_config()
    c = ConfigDict()
    c.seed = 0
    c.mesh = g.mesh
    c.vae = ConfigDict(dict(preset="wan21", checkpoint="", dtype="float32"))
    c.any4d = ConfigDict(dict(
        preset="full",
        checkpoint="",  # any4d_4v_combined.pth or the orbax dir written by tools/convert_any4d.py
        dtype="float32",
        lora_rank=64,  # reported
        lora_alpha=32.0,  # reported
    ))
    c.correspondence = ConfigDict(dict(view_frame_rule="last"))
    # The default connector (the paper's single conv); stitch.variants override it for the comparison.
    c.connector = ConfigDict(ConnectorConfig().to_dict())
    c.connector.kernel = list(c.connector.kernel)
    c.connector.stride = list(c.connector.stride)
    c.connector.padding = list(c.connector.padding)
    c.stitch = ConfigDict(dict(
        layers=[2, 4, 6, 8, 10, 12, 16, 20],  # candidate ℓ (trunk blocks replaced)
        variants=ConfigDict({"conv": ConfigDict()}),  # name → overrides of `connector`
        criterion="tokens",  # "tokens" (residual stream at ℓ, the paper's) or "all" (plus hook0 and taps)
        weights=ConfigDict(dict(tokens=1.0, hook0=1.0, taps=1.0)),
        steps=2000,
        batch_size=4,
        optim=_optim(lr=1e-3),
    ))
    c.align = ConfigDict(dict(
        steps=20000,  # ≈ 20 epochs of 4000 clips at batch 4 (reported: 20 epochs)
        batch_size=4,
        train_lora=True,
        latent_noise_std=0.0,
        weights=ConfigDict(dict(translation=1.0, rotation=1.0, depth=1.0, points=1.0, scene_flow=1.0)),
        optim=_optim(),
    ))
    c.data = ConfigDict(dict(
        num_frames=81, height=480, width=832,
        # checker_size: floor texture, world units. dataset: "" renders clips seed, seed + 1, … with toyworld's
        # defaults; a toyworld_tfds builder config ("zoo") takes them from that dataset's splits instead (its
        # held-out clips from its held-out split; seed and checker_size unused).
        toyworld=ConfigDict(dict(num_clips=0, seed=0, checker_size=0.5, dataset="")),
        videos=ConfigDict(dict(path="", max_clips=0)),  # real videos (DL3DV, RealEstate10K, MiraData, …)
        generated=ConfigDict(dict(path="", max_clips=0)),  # .npz samples of the base Wan model (latents [+ video])
        heldout_fraction=0.05,
        cache_dir="",  # default <workdir>/cache
        cache_dtype="float16",
        shard_size=16,
        batch_size=1,  # clips per teacher pass while caching
    ))
    c.eval = ConfigDict(dict(
        batch_size=1,
        max_clips=32,
        sigmas=[0.0, 0.1, 0.25, 0.5, 1.0],
        reward=ConfigDict(dict(top_k=3, conf_quantile=0.0, flow_threshold=0.05, stride=4, use_scene_flow=True)),
    ))
    # max_consecutive_skips: stop with an error after this many non-finite (skipped) updates in a row; 0 = never.
    # profile_steps > 0: a jax.profiler trace of that many alignment steps (from the stage's second step in this run)
    # in <workdir>/profile; the job's one window (the stitching search is not traced).
    c.train = ConfigDict(dict(save_every=500, log_every=10, progress=True, max_consecutive_skips=10, profile_steps=0))
    return c


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key}={value!r}: {why}")


def validate_lgm(c: ConfigDict) -> ConfigDict:
    """Checks an LGM config; raises ConfigError (a ValueError) naming the first bad key. Returns the config."""
    check_finite(c)
    if c.vae.preset not in VAE_PRESETS:
        _fail("vae.preset", c.vae.preset, f"must be one of {VAE_PRESETS}")
    if c.any4d.preset not in ANY4D_PRESETS:
        _fail("any4d.preset", c.any4d.preset, f"must be one of {ANY4D_PRESETS}")
    if c.correspondence.view_frame_rule not in VIEW_FRAME_RULES:
        _fail("correspondence.view_frame_rule", c.correspondence.view_frame_rule, f"must be one of {VIEW_FRAME_RULES}")
    try:
        ConnectorConfig.from_dict(c.connector.to_dict())
        for name, over in c.stitch.variants.items():
            ConnectorConfig.from_dict({**c.connector.to_dict(), **dict(over)})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.connector / stitch.variants: {e}") from None
    if not c.stitch.layers or any(int(l) < 0 for l in c.stitch.layers):
        _fail("stitch.layers", c.stitch.layers, "needs at least one layer ≥ 0")
    if c.stitch.criterion not in FEATURE_CRITERIA:
        _fail("stitch.criterion", c.stitch.criterion, f"must be one of {FEATURE_CRITERIA}")
    unknown = set(c.align.weights) - set(MODALITIES)
    if unknown:
        _fail("align.weights", dict(c.align.weights), f"unknown modalities {sorted(unknown)}; known {sorted(MODALITIES)}")
    if sum(float(v) for v in c.align.weights.values()) <= 0:
        _fail("align.weights", dict(c.align.weights), "need a positive weight")
    for key in ("stitch.steps", "stitch.batch_size", "align.batch_size", "data.shard_size", "data.batch_size",
                "eval.batch_size", "train.save_every", "train.log_every"):
        v = c[key.split(".")[0]][key.split(".")[1]]
        if int(v) < 1:
            _fail(key, v, "must be ≥ 1")
    if int(c.align.steps) < 0:
        _fail("align.steps", c.align.steps, "must be ≥ 0")
    if int(c.train.max_consecutive_skips) < 0:
        _fail("train.max_consecutive_skips", c.train.max_consecutive_skips, "must be ≥ 0 (0: never stop)")
    if not isinstance(c.train.profile_steps, int) or c.train.profile_steps < 0:
        _fail("train.profile_steps", c.train.profile_steps, "must be an integer ≥ 0 (0: no profiler trace)")
    if c.train.profile_steps and int(c.align.steps) < 2:
        _fail("train.profile_steps", c.train.profile_steps,
              f"traces the alignment stage from its second step: needs align.steps ≥ 2 (it is {c.align.steps})")
    try:
        check_num_frames(int(c.data.num_frames))
    except ValueError as e:
        _fail("data.num_frames", c.data.num_frames, str(e))
    from vggrpo_jax.models.wan.vae_config import WanVAEConfig  # noqa: PLC0415

    vae = getattr(WanVAEConfig, c.vae.preset)()
    views = 1 + (int(c.data.num_frames) - 1) // vae.temporal_stride
    if views < MIN_VIEWS_MOTION:
        _fail("data.num_frames", c.data.num_frames,
              f"gives {views} latent frames (geometry views); the evaluation's r_motion needs ≥ {MIN_VIEWS_MOTION}: use "
              f"≥ {1 + vae.temporal_stride * (MIN_VIEWS_MOTION - 1)}")
    for key in ("data.height", "data.width"):
        size = int(c.data[key.split(".")[1]])
        if size <= 0 or size % vae.spatial_stride:
            _fail(key, size, f"must be a positive multiple of the VAE stride {vae.spatial_stride} "
                             f"(vae.preset={c.vae.preset!r})")
    if int(c.data.shard_size) % int(c.data.batch_size):
        _fail("data.shard_size", c.data.shard_size, f"must be a multiple of data.batch_size ({c.data.batch_size})")
    if not 0.0 < float(c.data.heldout_fraction) < 1.0:
        _fail("data.heldout_fraction", c.data.heldout_fraction, "must be in (0, 1)")
    if c.data.cache_dtype not in ("float32", "float16"):
        _fail("data.cache_dtype", c.data.cache_dtype, "must be float32 or float16")
    if not (c.data.toyworld.num_clips or c.data.videos.path or c.data.generated.path):
        _fail("data", "no source", "set data.toyworld.num_clips, data.videos.path or data.generated.path")
    check_paths(c, ("vae.checkpoint", "any4d.checkpoint", "data.videos.path", "data.generated.path"))
    if c.align.train_lora and int(c.any4d.lora_rank) <= 0:
        _fail("align.train_lora", True, "needs any4d.lora_rank > 0")
    for name in ("stitch.optim", "align.optim"):
        sect, sub = name.split(".")
        try:
            OptimConfig.from_config(c[sect][sub], where=f"config.{name}")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.{name}: {e}") from None
    return c


__all__ = ["lgm_base_config", "validate_lgm"]
