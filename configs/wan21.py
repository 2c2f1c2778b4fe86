"""VGGRPO on Wan2.1-T2V-1.3B: the paper-like setup (Flow-GRPO's Wan recipe + latent geometry rewards).

Paths are placeholders for your converted checkpoints, e.g.
  python -m vggrpo_jax.train --config=configs/wan21.py --workdir=runs/wan21 \
    --config.dit.checkpoint=ckpt/wan21_dit --config.vae.checkpoint=ckpt/wan21_vae \
    --config.text.cache_dir=ckpt/text_cache --config.lgm.checkpoint=runs/lgm_wan21/lgm \
    --config.prompts.path=prompts/train.jsonl
"""

from vggrpo_jax.config import base_config


def get_config():
    c = base_config()
    # Everything else (K=4, 20 SDE steps, CFG 4.5, LoRA r32/α64, β 0.004, clip 1e-3, 33×240×416) is the base.
    c.dit.preset = "wan21_1_3b"
    c.vae.preset = "wan21"
    return c
