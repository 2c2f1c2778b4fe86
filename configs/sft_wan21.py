"""The paper's SFT baseline: LoRA flow-matching fine-tuning of Wan2.1-T2V-1.3B on real clips.

    python tools/cache_text_embeddings.py ...   # fill text.cache_dir with the captions (and "") first
    python -m vggrpo_jax.finetune --config=configs/sft_wan21.py --workdir=DIR \
        --config.dit.checkpoint=CONVERTED_DIT --config.vae.checkpoint=WAN_VAE \
        --config.text.tokenizer=TOKENIZER_DIR --config.text.checkpoint=UMT5 --config.text.cache_dir=CACHE \
        --config.data.videos=clips.jsonl

The same LoRA (rank 32 on q, k, v, o of both attentions), mesh, clip size (33×240×416) and shift as the GRPO config
(configs/wan21.py), so SFT and VGGRPO differ only in the objective.
"""

from vggrpo_jax.sft.config import sft_base_config


def get_config():
    c = sft_base_config()
    c.finetune.mode = "lora"
    c.data.source = "videos"
    c.data.num_frames, c.data.height, c.data.width = 33, 240, 416
    c.data.num_heldout = 16
    c.optim.lr = 1e-4
    c.train.num_steps = 2000
    c.train.batch_size = 8
    return c
