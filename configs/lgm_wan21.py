"""LGM for Wan2.1-T2V-1.3B: Wan2.1 VAE latents (81×480×832 → 21 views of 30×52 tokens) stitched to the full Any4D.

    python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py --workdir=runs/lgm_wan21 \
      --config.vae.checkpoint=ckpt/wan21_vae --config.any4d.checkpoint=ckpt/any4d \
      --config.data.videos.path=data/real_videos --config.data.generated.path=data/wan21_samples

The recipe (single 5×5×5 conv connector, LoRA r64/α32 on the Any4D trunk, AdamW 2e−4, cosine after 100 warm-up
steps, clip 1.0) is the reported one; see vggrpo_jax/lgm/config.py.
"""

from vggrpo_jax.lgm.config import lgm_base_config


def get_config():
    c = lgm_base_config()
    c.vae.preset = "wan21"
    c.any4d.preset = "full"
    # Deeper connectors for the stitching report, next to the paper's single conv.
    c.stitch.variants = {"conv": {}, "conv_mlp2": {"blocks": 2, "block_kind": "mlp"}}
    return c
