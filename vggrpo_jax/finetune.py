"""Entry point: flow-matching fine-tuning of the Wan DiT (full or LoRA).

    python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=DIR     # toy T2V DiT pretraining
    python -m vggrpo_jax.finetune --config=configs/sft_wan21.py --workdir=DIR   # the paper's SFT baseline

Resumable: run the same command again after an interruption. See vggrpo_jax/sft/job.py.
"""

from __future__ import annotations


def main(argv) -> None:
    del argv
    from vggrpo_jax.sft.job import run  # noqa: PLC0415

    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415
    from vggrpo_jax.config import define_flags  # noqa: PLC0415

    _CONFIG, _WORKDIR = define_flags()
    cli.run_absl(main)  # a user error: one line, exit status 2 (--verbose: traceback)
