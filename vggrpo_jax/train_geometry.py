"""Entry point: train the toy geometry model (Any4D architecture) on toyworld.

    python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py --workdir=DIR

Resumable: run the same command again after an interruption. See vggrpo_jax/geometry_model/job.py.
"""

from __future__ import annotations


def main(config, workdir: str) -> None:
    from vggrpo_jax.geometry_model.job import run  # noqa: PLC0415  (the job's imports after the flags parsed)

    run(config, workdir)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(main)  # --config, --workdir; a user error: one line, exit status 2 (--verbose: traceback)
