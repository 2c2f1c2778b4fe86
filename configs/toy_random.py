"""Tiny seeded-random models on toyworld captions: the whole VGGRPO loop on a CPU in a minute — for tests.

    python -m vggrpo_jax.train --config=configs/toy_random.py --workdir=/tmp/vggrpo_toy_random

Every code path is real (UMT5 text encoding with a sentencepiece tokenizer trained on the captions, the Wan DiT with
LoRA, SDE rollouts with log-probs, the LGM built first by train_lgm from configs/lgm_toy.py, both latent rewards, GRPO
updates, EMA, evaluation with VAE decoding and the RGB Any4D path, mp4 samples, camera plots, tensorboard metrics,
orbax checkpoints and resume); the weights are seeded random (`allow_random_init`), so the rewards measure a random
teacher's geometry. The trained toy world is configs/toy.py.
"""

from vggrpo_jax.config import base_config


def get_config():
    c = base_config()
    c.allow_random_init = True
    c.mesh.fsdp = -1

    c.dit.preset = "tiny"
    c.dit.dtype = c.dit.param_dtype = "float32"
    c.dit.remat_policy = "none"
    c.lora.rank, c.lora.alpha = 4, 8.0
    c.text.max_length = 64
    c.text.dtype = "float32"
    c.text.toy_dim = 32
    # The LGM (tiny VAE + tiny Any4D) is constructed first, in <workdir>/lgm; the VAE/Any4D come from that config.
    # (With --config.lgm.checkpoint=DIR instead, these sections must describe the LGM's VAE and Any4D.)
    c.lgm.build_config = "lgm_toy.py"  # relative to this file (config_files), from any working directory
    c.vae.preset = "tiny21"
    c.vae.dtype = "float32"
    c.any4d.preset, c.any4d.dtype, c.any4d.lora_rank, c.any4d.lora_alpha = "tiny", "float32", 4, 2.0

    c.video.num_frames, c.video.height, c.video.width, c.video.fps = 9, 64, 64, 8
    c.prompts.path = c.prompts.eval_path = "toyworld"
    c.prompts.toyworld_count = 32

    # The toy teacher has random weights: its scene flow is noise that marks every point dynamic, so the r_geo
    # point cloud would be empty. Real Any4D flow is ~0 on static scenes; keep the filter on for real runs.
    c.rewards.use_scene_flow = False

    c.rl.group_size = 4
    c.rl.prompts_per_batch = 2
    c.rl.num_steps = 8
    c.rl.clip_eps = 0.01
    c.optim.lr = 1e-3
    c.ema.every = 2

    c.train.num_iterations = 12
    c.train.checkpoint_every = 6
    c.eval.every = 6
    c.eval.num_prompts = 2
    c.eval.num_steps = 8
    return c
