"""Evaluates the newest checkpoint of a GRPO run (EMA adapters): ODE samples of held-out prompts scored by the LGM,
the RGB path and a pixel-space motion score (vggrpo_jax/grpo/evaluator.py); writes eval_<step>.json and samples.

    python -m vggrpo_jax.evaluate --config=configs/toy.py --workdir=DIR
"""

from __future__ import annotations

from typing import Sequence

from absl import app, logging

from vggrpo_jax.config import define_flags
from vggrpo_jax.grpo.run import evaluate_latest


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    print(evaluate_latest(FLAGS_CONFIG.value, FLAGS_WORKDIR.value))


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    FLAGS_CONFIG, FLAGS_WORKDIR = define_flags()
    cli.run_absl(main)
