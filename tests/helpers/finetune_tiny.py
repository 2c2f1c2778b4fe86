"""The tiny full fine-tune of tests/test_finetune.py as a config file, for running `python -m vggrpo_jax.finetune`
as a subprocess (tests/test_preemption.py); the workdir needs the latent caches tests/test_finetune.py writes."""


def get_config():
    from tests.test_finetune import _config  # noqa: PLC0415

    return _config(4)
