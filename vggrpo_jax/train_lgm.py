"""Build the Latent Geometry Model (the LGM job: vggrpo_jax/lgm/pipeline.py).

    python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py --workdir=DIR [--config.align.steps=...]

Every stage resumes from what DIR already holds; SIGTERM or Ctrl-C saves the running stage and exits non-zero.
"""

from __future__ import annotations

from vggrpo_jax.lgm.pipeline import run

__all__ = ["run"]


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(run)  # --config, --workdir; a user error: one line, exit status 2 (--verbose: traceback)
