"""The toy GRPO run of tests/test_train.py as a config file: `--config=tests/helpers/grpo_tiny.py:LGM_DIR`, where
LGM_DIR is a saved LatentGeometryModel on configs/lgm_toy.py's VAE and Any4D (tests/test_train.py's lgm_dir)."""


def get_config(lgm_dir: str):
    from tests.test_train import _config  # noqa: PLC0415

    return _config(lgm_dir, 4)
