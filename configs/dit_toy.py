"""The toy text-to-video DiT (Wan architecture, small), pretrained by flow matching on toy-VAE latents of toyworld.

    python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=/tmp/dit_toy

Clips of zoo.VIDEO = 17×64×64 → latents of 5×8×8; the DiT sees 5×4×4 = 80 tokens. Full fine-tuning from a seeded
random init (pretraining); the text encoder is the toy UMT5 with a sentencepiece tokenizer trained on the captions.
Needs the trained toy VAE (vae.checkpoint = "zoo:vae"); the job refuses to build latents without trained VAE
weights.

Shipped (this config, 1.26 M parameters, 4000 steps at B = 16: 2.8 it/s = 45 samples/s, 24 min + 3 min of latent
encoding + 1.5 min of mix report): held-out flow-matching loss 0.879 (0.33 M parameters at dim 64: 1.226, 8 it/s).
The samples follow their captions' colours and layout but are blobby, and frame smoothness (sft/mix.py) marks all 64
of 64 ODE samples jittery (median 0.558) against 27 / 64 data clips (median 0.612, threshold 0.590) — the base model
does not reproduce the data's mix yet (the issue's bar; tests/test_zoo_dit.py records it as a strict xfail).
"""

from vggrpo_jax.sft.config import sft_base_config


def get_config():
    c = sft_base_config()
    c.allow_random_init = True
    c.mesh.fsdp = -1
    c.dit.preset = "tiny"
    c.dit.dtype = c.dit.param_dtype = "float32"
    c.dit.remat_policy = "none"
    c.dit.arch.num_attention_heads = 4
    c.dit.arch.attention_head_dim = 32  # dim 128: at dim 64 (16) the 48 × 2 × 2 = 192-wide latent patches are
    c.dit.arch.ffn_dim = 512  # squeezed into 64 — held-out FM loss 1.226 (plateau from step ≈ 1200) against 0.879
    c.dit.arch.num_layers = 4
    c.dit.arch.freq_dim = 64
    c.lora.rank = 0
    c.finetune.mode = "full"
    c.vae.preset = "tiny21"
    c.vae.checkpoint = "zoo:vae"  # the trained toy VAE (its architecture comes from the zoo manifest)
    c.text.max_length = 64
    c.text.dtype = "float32"
    c.text.toy_dim = 32
    c.data.source = "toyworld"
    c.data.num_train, c.data.num_heldout = 2048, 64
    c.data.num_frames, c.data.height, c.data.width = 17, 64, 64
    c.data.encode_batch = 8
    c.optim.lr = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.end_lr_fraction = 0.05
    c.train.num_steps = 4000  # ≈ 40 min at the measured 0.59 s/step (benchmarks/finetune_step.py, loaded CPU)
    c.train.batch_size = 16
    c.train.checkpoint_every = 500
    c.train.eval_every = 1000
    c.train.eval_clips = 64
    c.mix.samples = 64  # the base model's mix of smooth and jittered samples (sft/mix.py), in the manifest
    return c
