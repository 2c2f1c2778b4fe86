"""LGM on the trained toy world: the zoo's geometry model stitched onto the zoo VAE's latents.

    python tools/base_samples.py --out=/tmp/base_samples --num_samples=512      # the base DiT's samples
    python -m vggrpo_jax.train_lgm --config=configs/lgm_zoo.py --workdir=/tmp/lgm_zoo \
        --config.data.generated.path=/tmp/base_samples

Clips of the zoo's dataset (zoo.VIDEO = 17×64×64; its train split for calibration, its held-out split for the
evaluation), rendered by seed exactly as data/toyworld_tfds.py stores them → 5 latent frames of 8×8 → 5 views of
4×4 tokens → the teacher's 56×56 input, the size the geometry model was trained at. The architectures come from the
shipped manifests (vae.preset / any4d.preset only give the strides the validation checks, which are the same).
As the paper does, the calibration mixes real clips with the base model's samples (data.generated.path, written by
tools/base_samples.py; without it, real clips only); 1/8 of each source is held out (64 + 64), and the evaluation
reports the LGM–RGB agreement on each source separately as well as pooled.
The teacher's scene flow is the trained head's, so r_geo's dynamic-point filter stays on as in the GRPO rewards.
"""

from vggrpo_jax.lgm.config import lgm_base_config


def get_config():
    c = lgm_base_config()
    c.vae.preset, c.vae.checkpoint = "tiny21", "zoo:vae"
    c.any4d.preset, c.any4d.checkpoint = "tiny", "zoo:geometry"
    c.any4d.lora_rank, c.any4d.lora_alpha = 4, 4.0
    c.data.num_frames, c.data.height, c.data.width = 17, 64, 64
    c.data.toyworld.dataset = "zoo"
    c.data.toyworld.num_clips = 512
    c.data.generated.max_clips = 512
    c.data.heldout_fraction = 1 / 8  # 64 held-out clips of each source (the issue's ≥ 64)
    c.data.cache_dtype = "float32"
    c.data.shard_size = 16
    c.data.batch_size = 8
    c.stitch.layers = [1, 2, 3, 4]  # the geometry model's trunk has 4 blocks
    c.stitch.variants = {"conv": {}, "conv_mlp1": {"blocks": 1, "block_kind": "mlp"}}
    c.stitch.steps = 300
    c.stitch.batch_size = 8
    c.stitch.optim.lr = 3e-3
    c.stitch.optim.warmup_steps = 20
    c.align.steps = 1000
    c.align.batch_size = 8
    c.align.optim.lr = 1e-3
    c.align.optim.warmup_steps = 50
    c.eval.batch_size = 8
    c.eval.max_clips = 0  # every held-out clip
    c.eval.sigmas = [0.0, 0.1, 0.3, 1.0]
    # The GRPO reward settings of configs/geometry_toy.py's evaluation (every view, scene-flow filter on).
    c.eval.reward.stride = 1
    c.eval.reward.flow_threshold = 0.01
    c.eval.reward.conf_quantile = 0.1
    c.train.save_every = 100
    c.train.log_every = 20
    return c
