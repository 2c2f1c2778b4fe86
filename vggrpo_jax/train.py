"""VGGRPO post-training of a Wan model with latent geometry rewards (the GRPO job: vggrpo_jax/grpo/run.py).

    python -m vggrpo_jax.train --config=configs/wan21.py --workdir=DIR [--config.rl.group_size=8 ...]
    python -m vggrpo_jax.train --config=configs/toy.py --workdir=/tmp/vggrpo_toy --config.train.profile_steps=3

A run resumes from the newest checkpoint in DIR/checkpoints and repeats the uninterrupted run exactly; SIGTERM or
Ctrl-C saves a checkpoint after the current iteration and exits non-zero.
"""

from __future__ import annotations

from vggrpo_jax.grpo.run import evaluate_latest, train

__all__ = ["evaluate_latest", "train"]


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(train, quiet_logs=True)  # orbax's per-checkpoint INFO lines off: the progress bars are what to read
