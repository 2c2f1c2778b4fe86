"""VGGRPO post-training of a Wan model with latent geometry rewards (the GRPO job: vggrpo_jax/grpo/run.py).

    python -m vggrpo_jax.train --config=configs/wan21.py --workdir=DIR [--config.rl.group_size=8 ...]
    python -m vggrpo_jax.train --config=configs/toy.py --workdir=/tmp/vggrpo_toy --config.train.profile_steps=3

A run resumes from the newest checkpoint in DIR/checkpoints and repeats the uninterrupted run exactly; SIGTERM or
Ctrl-C saves a checkpoint after the current iteration and exits non-zero.
"""

from __future__ import annotations

from typing import Sequence

from absl import app, logging

from vggrpo_jax.config import define_flags
from vggrpo_jax.grpo.run import evaluate_latest, train

__all__ = ["evaluate_latest", "train"]


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # orbax logs every checkpoint step at INFO; the progress bars and our warnings are what a person needs to see.
    logging.set_verbosity(logging.WARNING)
    train(FLAGS_CONFIG.value, FLAGS_WORKDIR.value)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    FLAGS_CONFIG, FLAGS_WORKDIR = define_flags()
    cli.run_absl(main)
