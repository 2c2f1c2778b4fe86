"""LGM at toy scale: tiny Wan2.1-style VAE + tiny Any4D (random weights are a valid teacher) on toyworld clips.

Runs on CPU in a few minutes (80 training + 16 held-out clips, ℓ ∈ {1..4}, two connector variants):
    python -m vggrpo_jax.train_lgm --config=configs/lgm_toy.py --workdir=/tmp/lgm_toy
Clips of 9 frames at 64×64 → 3 latent frames of 8×8 → 3 views of 4×4 tokens → teacher input 56×56.
Checkers of 1.0 world unit: the random tiny VAE cannot carry detail finer than a latent cell (tests/test_lgm_learning.py).
"""

from vggrpo_jax.lgm.config import lgm_base_config


def get_config():
    c = lgm_base_config()
    c.vae.preset = "tiny21"
    c.any4d.preset = "tiny"
    c.any4d.lora_rank = 4
    c.any4d.lora_alpha = 2.0
    c.data.num_frames, c.data.height, c.data.width = 9, 64, 64
    c.data.toyworld.num_clips = 96
    c.data.toyworld.checker_size = 1.0
    c.data.heldout_fraction = 1 / 6
    c.data.cache_dtype = "float32"
    c.data.shard_size = 8
    c.data.batch_size = 4
    c.stitch.layers = [1, 2, 3, 4]
    c.stitch.variants = {"conv": {}, "conv_mlp1": {"blocks": 1, "block_kind": "mlp"}}
    c.stitch.steps = 100
    c.stitch.batch_size = 4
    c.stitch.optim.lr = 3e-3
    c.stitch.optim.warmup_steps = 10
    c.align.steps = 100
    c.align.batch_size = 4
    c.align.optim.lr = 1e-3
    c.align.optim.warmup_steps = 10
    c.eval.batch_size = 4
    c.eval.max_clips = 8
    c.eval.sigmas = [0.0, 0.1, 0.3, 1.0]
    c.eval.reward.stride = 1
    # The random teacher's scene flow is noise that marks every point dynamic (r_geo would be −inf everywhere).
    c.eval.reward.use_scene_flow = False
    c.train.save_every = 50
    c.train.log_every = 10
    return c
