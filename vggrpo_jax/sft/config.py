"""The fine-tuning job's config: the GRPO config's model sections (mesh, dit, lora, vae, text — same keys, same
builders) plus `finetune`, `data`, `optim` (training.OptimConfig fields) and `train`."""

from __future__ import annotations

import copy

from ml_collections import ConfigDict

from vggrpo_jax.config import base_config


def sft_base_config() -> ConfigDict:
    base = base_config()
    c = ConfigDict()
    c.seed = 0
    c.allow_random_init = False
    for k in ("mesh", "distributed", "dit", "lora", "vae", "text"):
        c[k] = copy.deepcopy(base[k])
    c.dit.arch = ConfigDict()  # WanConfig overrides of the preset (toy sizes)
    c.finetune = ConfigDict(dict(
        mode="lora",  # "full" | "lora"
        caption_dropout=0.1,  # fraction of captions replaced by "" (classifier-free guidance at sampling)
        flow=ConfigDict(dict(shift=3.0, time_sampling="uniform", logit_mean=0.0, logit_std=1.0,
                             num_train_timesteps=1000)),
    ))
    c.data = ConfigDict(dict(
        source="videos",  # "videos" (a .jsonl list) | "toyworld"
        videos="",  # .jsonl of {"video": path, "caption": text}; the first num_heldout rows are held out
        toyworld_source="tfds", data_dir="", data_config="zoo",  # toyworld: the dataset (or "render": its records)
        num_train=2048, num_heldout=16, num_frames=33, height=240, width=416, encode_batch=1,
    ))
    c.optim = ConfigDict(dict(name="adamw", lr=1e-4, schedule="constant", warmup_steps=0, weight_decay=1e-4,
                              grad_clip=1.0))
    c.train = ConfigDict(dict(num_steps=1000, batch_size=8, log_every=10, checkpoint_every=100, keep_checkpoints=3,
                              eval_every=100, eval_clips=16, eval_repeats=2, profile_steps=0,
                              max_consecutive_skips=10))  # stop with an error after this many skipped updates in a row
    # After training (toyworld data, full mode): does the model reproduce the data's mix of smooth and jittered
    # cameras? ODE samples of `samples` held-out captions against `data_clips` training clips (sft/mix.py); 0 = off.
    c.mix = ConfigDict(dict(samples=0, data_clips=64, num_steps=20, cfg_scale=5.0, seed=0))
    # Where a fully trained DiT is written ("" = <workdir>/export), and the toy text encoder it reads
    # ("" = <workdir>/export_text; only when the encoder is the toy one built by the job).
    c.export = ConfigDict(dict(dir="", text_dir=""))
    return c


__all__ = ["sft_base_config"]
