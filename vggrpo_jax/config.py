"""Configuration: the one place where defaults and presets live, plus validation and the absl flags.

Experiment files in `configs/` are small: `get_config()` starts from `base_config()` (the paper-like Wan2.1 GRPO
setup) and overrides what differs. Every entry point takes

    --config=configs/x.py [--config.rl.group_size=8 ...] --workdir=DIR

An override of a key that does not exist fails (the ConfigDict is locked), and `validate(config)` rejects invalid
values with a message that names the key. The flags themselves are defined by cli.job_flags; relative paths written
in a config file are resolved against the file's directory (config_files).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping

import ml_collections
from ml_collections import ConfigDict

# Option lists live with the code that implements them; the config validates against those same tuples.
from vggrpo_jax.errors import ConfigError, PathNotFoundError
from vggrpo_jax.geometry.zbuffer import ZBUFFER_METHODS
from vggrpo_jax.models.any4d.config import ANY4D_PRESETS
from vggrpo_jax.models.wan.config import ATTENTION_KINDS as ATTENTION
from vggrpo_jax.models.wan.config import PRESETS as DIT_PRESETS
from vggrpo_jax.models.wan.config import REMAT_POLICIES as REMAT
from vggrpo_jax.models.wan.vae_config import VAE_PRESETS, check_num_frames
from vggrpo_jax.rl.sde import NOISE_RULES

DTYPES = ("float32", "bfloat16")


def base_config() -> ConfigDict:
    """The paper-like GRPO setup on Wan2.1-T2V-1.3B (Flow-GRPO's Wan settings + VGGRPO's rewards)."""
    c = ConfigDict()
    c.seed = 0
    # Random weights for any component without a checkpoint: ONLY for toy runs and tests (configs/toy_random.py).
    c.allow_random_init = False

    c.mesh = ConfigDict(dict(data=1, fsdp=-1, context=1, tensor=1))
    # Multi-host: set coordinator_address/num_processes/process_id, or auto=True on TPU pods / SLURM.
    c.distributed = ConfigDict(dict(coordinator_address="", num_processes=1, process_id=0, auto=False))

    c.dit = ConfigDict(
        dict(
            preset="wan21_1_3b",
            checkpoint="",  # orbax dir written by tools/convert_wan.py
            dtype="bfloat16",
            param_dtype="bfloat16",
            scan_layers=True,
            remat_policy="full",
            attention="auto",
        )
    )
    # LoRA on q, k, v, o of self- (attn1) and cross-attention (attn2): regexes searched in module paths.
    c.lora = ConfigDict(dict(rank=32, alpha=64.0, targets=[r"attn[12]\.to_q$", r"attn[12]\.to_k$", r"attn[12]\.to_v$",
                                                           r"attn[12]\.to_out$"], init_seed=0))
    c.vae = ConfigDict(dict(preset="wan21", checkpoint="", dtype="float32"))
    c.text = ConfigDict(
        dict(
            tokenizer="",  # local directory with the UMT5 tokenizer
            checkpoint="",  # orbax dir written by tools/convert_umt5.py
            cache_dir="",  # embedding cache (tools/cache_text_embeddings.py); skips the encoder when filled
            max_length=512,
            batch_size=8,
            dtype="bfloat16",  # matmul dtype of the encoder
            toy_dim=32,  # width of the random tiny encoder of toy runs
        )
    )
    # The geometry teacher the LGM was stitched into (its tail runs inside the LGM; the whole model is the RGB
    # evaluator). Same keys as configs/lgm_*.py.
    c.any4d = ConfigDict(dict(preset="full", checkpoint="", dtype="bfloat16", lora_rank=64, lora_alpha=32.0))
    # checkpoint: the directory written by `python -m vggrpo_jax.train_lgm` (<its workdir>/lgm); or build_config: an
    # LGM config file to construct the LGM first, in <workdir>/lgm (toy runs).
    c.lgm = ConfigDict(dict(checkpoint="", build_config=""))

    c.video = ConfigDict(dict(num_frames=33, height=240, width=416, fps=16))
    # path: .txt (one prompt per line) or .jsonl ({"prompt": ..., "split": "static"|"dynamic"}), "toyworld" (captions of
    # toyworld's default scenes) or "toyworld:zoo" (the zoo dataset's captions: train split; held-out for eval_path).
    c.prompts = ConfigDict(dict(path="", eval_path="", split="all", toyworld_count=64))

    c.rl = ConfigDict(
        dict(
            group_size=4,  # K samples per prompt
            prompts_per_batch=8,  # P prompts per iteration (global, over all hosts); P·K samples per update
            num_steps=20,
            shift=3.0,
            cfg_scale=4.5,
            noise_rule="flow_grpo_wan",
            noise_a=0.7,  # sd3 rule
            noise_eta=0.3,  # constant rule
            timestep_fraction=0.99,  # train steps 0..N-2
            sde_window_size=0,  # >0: Flow-GRPO-Fast window of this many SDE steps, at a random start
            clip_eps=1e-3,
            beta=0.004,
            inner_epochs=1,
            micro_batch_size=0,  # 0: the whole batch per step
        )
    )
    c.rewards = ConfigDict(
        dict(
            weights=ConfigDict(dict(motion=1.0, geo=1.0)),
            top_k=3,
            normalize=True,  # errors divided by the scene's median depth (False: the paper's literal absolute error)
            leave_one_out=True,
            use_scene_flow=True,  # drop dynamic points (by the predicted scene flow) from the r_geo point cloud
            flow_threshold=0.01,  # dynamic: |flow| > threshold × median depth
            conf_quantile=0.1,  # drop the least confident 10% of points
            stride=1,  # r_geo renders every stride-th pixel
            zbuffer="scatter",  # r_geo's z-buffer: "scatter" (CPU, GPU) or "sort" (no scatter: TPU); same reward
            adv_clip=5.0,
        )
    )
    c.optim = ConfigDict(dict(lr=1e-4, b1=0.9, b2=0.999, weight_decay=1e-4, eps=1e-8, grad_clip=1.0, warmup_steps=0))
    c.ema = ConfigDict(dict(decay=0.9, every=8))
    # profile_steps > 0: a jax.profiler trace of that many iterations (from the run's second) in <workdir>/profile.
    # max_consecutive_skips: stop with an error after this many updates in a row were skipped for non-finite values
    # (0 = never stop).
    c.train = ConfigDict(dict(num_iterations=1000, log_every=1, checkpoint_every=10, keep_checkpoints=3,
                              profile_steps=0, max_consecutive_skips=10))
    # report: at the end of a run, base against trained on the eval prompts → <workdir>/report.md + PNGs (grpo/report.py)
    c.eval = ConfigDict(dict(every=50, num_prompts=8, num_steps=50, write_videos=True, rgb_rewards=True, report=True))
    # Test-time reward guidance of ODE sampling (`python -m vggrpo_jax.sample`; off at scale 0): at the steps in
    # `steps`, v ← v − scale·g(σ)·clip(∇_x r(x̂0)), r = Σ weights·(LGM reward), x̂0 = x − σ·v (rl/reward_guidance.py).
    # steps: "all", "0,5,10" or a slice "start:stop[:step]"; schedule: ratio σ/(1−σ) (the paper's t/(1−t)) |
    # constant | sigma | one_minus_sigma; clip: per-sample gradient-norm clip (0: none); through_model: differentiate
    # x̂0 through the DiT (False: ∇ w.r.t. x̂0 only, no DiT backward).
    c.guidance = ConfigDict(dict(scale=0.0, steps="all", schedule="ratio", clip=1.0, through_model=True,
                                 weights=ConfigDict(dict(motion=1.0, geo=1.0))))
    return c


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key}={value!r}: {why}")


def check_finite(c: ConfigDict, prefix: str = "") -> None:
    """Rejects NaN and ±inf anywhere in the config (also inside lists), naming the key: a NaN learning rate would
    otherwise train NaN weights and skip every later update."""
    for key, value in c.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, (ConfigDict, Mapping)):
            check_finite(value if isinstance(value, ConfigDict) else ConfigDict(dict(value)), dotted + ".")
            continue
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                _fail(dotted, value, "must be a finite number")


def _choice(c: ConfigDict, key: str, choices: Iterable[str]) -> None:
    value = _get(c, key)
    if value not in tuple(choices):
        _fail(key, value, f"must be one of {tuple(choices)}")


def _positive(c: ConfigDict, key: str, allow_zero: bool = False) -> None:
    value = _get(c, key)
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        _fail(key, value, "must be " + ("≥ 0" if allow_zero else "> 0"))


def _get(c: ConfigDict, dotted: str) -> Any:
    node = c
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(c: ConfigDict) -> ConfigDict:
    """Checks a GRPO training config; raises ConfigError (a ValueError) naming the first bad key. Returns the config.

    Also checks every shape constraint the models and rewards impose on config.video (see `_check_shapes`), so a bad
    size fails here, before any model is built, rather than inside tracing.
    """
    check_finite(c)
    _choice(c, "dit.preset", DIT_PRESETS)
    _choice(c, "dit.dtype", DTYPES)
    _choice(c, "dit.param_dtype", DTYPES)
    _choice(c, "dit.remat_policy", REMAT)
    _choice(c, "rewards.zbuffer", ZBUFFER_METHODS)
    _choice(c, "dit.attention", ATTENTION)
    _choice(c, "vae.preset", VAE_PRESETS)
    _choice(c, "text.dtype", DTYPES)
    _choice(c, "any4d.preset", ANY4D_PRESETS)
    _choice(c, "any4d.dtype", DTYPES)
    _choice(c, "prompts.split", ("all", "static", "dynamic"))
    _choice(c, "rl.noise_rule", NOISE_RULES)
    for key in ("rl.group_size", "rl.prompts_per_batch", "rl.num_steps", "rl.cfg_scale",
                "rl.clip_eps", "rl.inner_epochs", "optim.lr", "train.num_iterations", "video.height", "video.width",
                "video.fps", "ema.every", "text.max_length", "text.batch_size", "rewards.top_k"):
        _positive(c, key)
    for key in ("rl.beta", "rl.micro_batch_size", "rl.sde_window_size", "lora.rank", "optim.weight_decay",
                "optim.grad_clip", "optim.warmup_steps", "rewards.flow_threshold", "rewards.stride",
                "eval.every", "eval.num_prompts", "train.checkpoint_every", "train.profile_steps",
                "train.max_consecutive_skips"):
        _positive(c, key, allow_zero=True)
    if c.rl.group_size < 2:
        _fail("rl.group_size", c.rl.group_size, "GRPO needs at least 2 samples per prompt to form an advantage")
    try:
        check_num_frames(int(c.video.num_frames))
    except ValueError as e:
        _fail("video.num_frames", c.video.num_frames, str(e))
    if not 0.0 < c.rl.timestep_fraction <= 1.0:
        _fail("rl.timestep_fraction", c.rl.timestep_fraction, "must be in (0, 1]")
    if c.rl.sde_window_size > c.rl.num_steps:
        _fail("rl.sde_window_size", c.rl.sde_window_size, f"must be ≤ rl.num_steps ({c.rl.num_steps})")
    if c.rl.micro_batch_size and (c.rl.prompts_per_batch * c.rl.group_size) % c.rl.micro_batch_size:
        _fail("rl.micro_batch_size", c.rl.micro_batch_size,
              "must divide rl.prompts_per_batch × rl.group_size")
    if not 0.0 <= c.ema.decay < 1.0:
        _fail("ema.decay", c.ema.decay, "must be in [0, 1)")
    if not 0.0 <= c.rewards.conf_quantile < 1.0:
        _fail("rewards.conf_quantile", c.rewards.conf_quantile, "must be in [0, 1)")
    weights = dict(c.rewards.weights)
    unknown = set(weights) - {"motion", "geo"}
    if unknown:
        _fail("rewards.weights", weights, f"unknown rewards {sorted(unknown)}; known: motion, geo")
    if sum(weights.values()) <= 0 or any(w < 0 for w in weights.values()):
        _fail("rewards.weights", weights, "weights must be ≥ 0 with a positive sum")
    _check_shapes(c)
    check_paths(c)
    validate_guidance(c)
    return c


def validate_guidance(c: ConfigDict, num_steps: int | None = None) -> ConfigDict:
    """Checks config.guidance (and, given the sampler's step count, that guidance.steps lie within it)."""
    from vggrpo_jax.rl.reward_guidance import SCHEDULES, parse_steps  # noqa: PLC0415

    g = c.guidance
    if not isinstance(g.scale, (int, float)) or not math.isfinite(g.scale) or g.scale < 0:
        _fail("guidance.scale", g.scale, "must be a finite number ≥ 0 (0 turns guidance off)")
    _choice(c, "guidance.schedule", SCHEDULES)
    if not isinstance(g.clip, (int, float)) or not math.isfinite(g.clip) or g.clip < 0:
        _fail("guidance.clip", g.clip, "must be a finite number ≥ 0 (0: no clipping)")
    if not isinstance(g.through_model, bool):
        _fail("guidance.through_model", g.through_model, "must be True or False")
    weights = dict(g.weights)
    unknown = set(weights) - {"motion", "geo"}
    if unknown:
        _fail("guidance.weights", weights, f"unknown rewards {sorted(unknown)}; known: motion, geo")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        _fail("guidance.weights", weights, "weights must be ≥ 0 with a positive sum")
    if not isinstance(g.steps, str):
        _fail("guidance.steps", g.steps, "must be a string: 'all', '0,5,10' or 'start:stop[:step]'")
    try:
        parse_steps(g.steps, num_steps)  # the syntax; with num_steps also the range
    except ValueError as err:  # its message names the key
        raise ConfigError(str(err)) from None
    return c


# Paths a GRPO config may name; an empty value means "not given" (random init for toy runs, or unused).
PATH_KEYS = ("dit.checkpoint", "vae.checkpoint", "any4d.checkpoint", "lgm.checkpoint", "lgm.build_config",
             "text.tokenizer", "text.checkpoint", "prompts.path", "prompts.eval_path")
# The zoo model each checkpoint key may name ("zoo:<name>").
ZOO_MODEL_OF = {"dit.checkpoint": "dit", "vae.checkpoint": "vae", "any4d.checkpoint": "geometry",
                "text.checkpoint": "text"}


def check_paths(c: ConfigDict, keys: Iterable[str] = PATH_KEYS) -> None:
    """Every path the config names exists (checked before anything is loaded; "toyworld" is not a path, and
    "zoo:<name>" names a shipped toy-world model, which must be shipped)."""
    from vggrpo_jax import zoo  # noqa: PLC0415

    for key in keys:
        value = _get(c, key)
        if isinstance(value, str) and value.startswith("zoo:"):
            name = value[len("zoo:"):]
            if name not in zoo.REGISTRY:
                raise PathNotFoundError(f"config.{key}={value!r}: the zoo has no model {name!r} ({sorted(zoo.REGISTRY)})")
            if key in ZOO_MODEL_OF and name != ZOO_MODEL_OF[key]:
                raise ConfigError(f"config.{key}={value!r}: this key takes the zoo's {ZOO_MODEL_OF[key]!r} model "
                                  f"('zoo:{ZOO_MODEL_OF[key]}')")
            if not os.path.isfile(os.path.join(zoo.weights_dir(name), "manifest.json")):
                raise PathNotFoundError(f"config.{key}={value!r}: not shipped yet; train it with: {zoo.REGISTRY[name][1]}")
        elif value and value != "toyworld" and not value.startswith("toyworld:") and not os.path.exists(value):
            raise PathNotFoundError(f"config.{key}={value!r}: no such path")


# Geometry views (= latent frames, one view per latent frame) the rewards need: r_motion differentiates the camera
# path twice (3 poses), r_geo leaves one view out (2), and it averages the rewards.top_k worst views.
MIN_VIEWS_MOTION = 3


def _check_shapes(c: ConfigDict) -> None:
    """The shape constraints of the VAE, the DiT and the rewards, from the presets named in the config."""
    from vggrpo_jax.models.wan.config import WanConfig  # noqa: PLC0415  (models stay out of the config's import)
    from vggrpo_jax.models.wan.vae_config import WanVAEConfig  # noqa: PLC0415
    from vggrpo_jax.rl.rollout import num_train_steps  # noqa: PLC0415

    vae = getattr(WanVAEConfig, c.vae.preset)()
    dit = WanConfig.preset(c.dit.preset)
    ts, s = vae.temporal_stride, vae.spatial_stride
    pt, ph, pw = dit.patch_size
    v = c.video
    try:
        check_num_frames(int(v.num_frames), ts)
    except ValueError as e:
        _fail("video.num_frames", v.num_frames, f"the {c.vae.preset} VAE: {e}")
    views = 1 + (v.num_frames - 1) // ts
    need = max(MIN_VIEWS_MOTION, int(c.rewards.top_k))
    if views < need:
        _fail("video.num_frames", v.num_frames,
              f"gives {views} latent frames (geometry views); the rewards need ≥ {need} (r_motion's accelerations "
              f"need 3 cameras, r_geo averages rewards.top_k={c.rewards.top_k} views): use ≥ {1 + ts * (need - 1)}")
    if views % pt:
        _fail("video.num_frames", v.num_frames,
              f"gives {views} latent frames, not divisible by the DiT's temporal patch {pt} (dit.preset={c.dit.preset!r})")
    for key, size, p in (("video.height", v.height, ph), ("video.width", v.width, pw)):
        if size % (s * p):
            lo = max(s * p, size // (s * p) * (s * p))
            _fail(key, size, f"must be a multiple of {s * p} (VAE stride {s} of vae.preset={c.vae.preset!r} × DiT patch "
                             f"{p} of dit.preset={c.dit.preset!r}), e.g. {lo} or {lo + s * p}")
    if c.rl.num_steps < 2:
        _fail("rl.num_steps", c.rl.num_steps, "the SDE noise schedule needs ≥ 2 sampling steps")
    try:
        num_train_steps(int(c.rl.num_steps), float(c.rl.timestep_fraction))
    except ValueError as err:
        _fail("rl.timestep_fraction", c.rl.timestep_fraction, str(err))


def validate_topology(c: ConfigDict, mesh_shape: Mapping[str, int], process_count: int) -> None:
    """Mesh and host divisibility of a GRPO config on a resolved mesh (axis → size) with `process_count` hosts.

    Raises ConfigError naming the key: the batch (and micro-batch) must split over the batch axes (data × fsdp),
    the text encoder's batch too, the prompts of a batch over the hosts; a tensor axis must divide the DiT's heads
    and FFN width, a context axis the DiT's token count (otherwise those axes would silently replicate the work).
    """
    from vggrpo_jax.models.wan.config import WanConfig  # noqa: PLC0415
    from vggrpo_jax.models.wan.vae_config import WanVAEConfig  # noqa: PLC0415

    shards = int(mesh_shape.get("data", 1)) * int(mesh_shape.get("fsdp", 1))
    batch = int(c.rl.prompts_per_batch) * int(c.rl.group_size)
    micro = int(c.rl.micro_batch_size) or batch
    if micro % shards:
        raise ConfigError(
            f"rl.prompts_per_batch × rl.group_size = {batch} samples (micro-batches of {micro}) do not split over "
            f"the {shards} batch shards (data × fsdp) of mesh {dict(mesh_shape)}: change the batch or the mesh"
        )
    if int(c.rl.prompts_per_batch) % process_count:
        _fail("rl.prompts_per_batch", c.rl.prompts_per_batch, f"must be divisible by the {process_count} hosts")
    if int(c.text.batch_size) % shards:
        _fail("text.batch_size", c.text.batch_size, f"must be divisible by the {shards} batch shards (data × fsdp)")
    dit = WanConfig.preset(c.dit.preset)
    tensor, context = int(mesh_shape.get("tensor", 1)), int(mesh_shape.get("context", 1))
    if tensor > 1:
        for what, size in (("attention heads", dit.num_attention_heads), ("FFN width", dit.ffn_dim)):
            if size % tensor:
                _fail("mesh.tensor", tensor, f"must divide the DiT's {size} {what} (dit.preset={c.dit.preset!r})")
    if context > 1:
        vae = getattr(WanVAEConfig, c.vae.preset)()
        pt, ph, pw = dit.patch_size
        tokens = ((1 + (c.video.num_frames - 1) // vae.temporal_stride) // pt
                  * (c.video.height // vae.spatial_stride // ph) * (c.video.width // vae.spatial_stride // pw))
        if tokens % context:
            _fail("mesh.context", context, f"must divide the DiT's {tokens} video tokens (config.video)")


__all__ = ["base_config", "validate", "validate_guidance", "validate_topology", "check_finite", "check_paths",
           "ml_collections"]
