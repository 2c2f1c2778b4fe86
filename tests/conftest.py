"""Test session setup: 8 simulated CPU devices, fp32 matmuls, set before jax is imported anywhere."""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests compile the same tiny programs many times (several train runs, xdist workers, subprocesses): a persistent
# compilation cache, keyed by the program's hash, lets later compiles load the executable instead.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vggrpo_jax_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    # `slow`: subprocess CLI runs and multi-process jobs. scripts/test.sh (CI) deselects them; run them with
    # `VGGRPO_TEST_MARK= bash scripts/test.sh` (everything) or `python -m pytest -m slow tests`.
    config.addinivalue_line("markers", "slow: slow test (subprocesses, multi-process runs); deselected by scripts/test.sh")
