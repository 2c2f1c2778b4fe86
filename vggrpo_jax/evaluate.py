"""Evaluates the newest checkpoint of a GRPO run (EMA adapters): ODE samples of held-out prompts scored by the LGM,
the RGB path and a pixel-space motion score (vggrpo_jax/grpo/evaluator.py); writes eval_<step>.json and samples.

    python -m vggrpo_jax.evaluate --config=configs/toy.py --workdir=DIR
"""

from __future__ import annotations

from vggrpo_jax.grpo.run import evaluate_latest


def main(config, workdir: str) -> None:
    print(evaluate_latest(config, workdir))


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(main, quiet_logs=True)
