"""Entry point: flow-matching fine-tuning of the Wan DiT (full or LoRA).

    python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=DIR     # toy T2V DiT pretraining
    python -m vggrpo_jax.finetune --config=configs/sft_wan21.py --workdir=DIR   # the paper's SFT baseline

Resumable: run the same command again after an interruption. See vggrpo_jax/sft/job.py.
"""

from __future__ import annotations


def main(config, workdir: str) -> None:
    from vggrpo_jax.sft.job import run  # noqa: PLC0415  (the job's imports after the flags parsed)

    run(config, workdir)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(main)  # --config, --workdir; a user error: one line, exit status 2 (--verbose: traceback)
