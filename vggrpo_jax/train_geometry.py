"""Entry point: train the toy geometry model (Any4D architecture) on toyworld.

    python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py --workdir=DIR

Resumable: run the same command again after an interruption. See vggrpo_jax/geometry_model/job.py.
"""

from __future__ import annotations


def main(argv) -> None:
    del argv
    from vggrpo_jax.geometry_model.job import run  # noqa: PLC0415

    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415
    from vggrpo_jax.config import define_flags  # noqa: PLC0415

    _CONFIG, _WORKDIR = define_flags()
    cli.run_absl(main)  # a user error: one line, exit status 2 (--verbose: traceback)
