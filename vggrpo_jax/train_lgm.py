"""Build the Latent Geometry Model (the LGM job: vggrpo_jax/lgm/pipeline.py).

    python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py --workdir=DIR [--config.align.steps=...]

Every stage resumes from what DIR already holds; SIGTERM or Ctrl-C saves the running stage and exits non-zero.
"""

from __future__ import annotations

from typing import Sequence

from absl import app

from vggrpo_jax.config import define_flags
from vggrpo_jax.lgm.pipeline import run

__all__ = ["run"]


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(FLAGS_CONFIG.value, FLAGS_WORKDIR.value)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    FLAGS_CONFIG, FLAGS_WORKDIR = define_flags()
    cli.run_absl(main)
