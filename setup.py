"""vggrpo_jax: VGGRPO (GRPO with 4D latent rewards) for Wan video models, in JAX/Flax NNX."""
from setuptools import find_packages, setup

INSTALL = [
    "jax>=0.7",
    "flax>=0.11",
    "optax",
    "orbax-checkpoint",
    "transformers",
    "einops",
    "ml_collections",
    "absl-py",
    "grain",
    "numpy",
    "safetensors",
    "sentencepiece",
    "protobuf",
    "imageio",
    "imageio-ffmpeg",
    "matplotlib",
    "tqdm",
    "tensorboardX",
]

EXTRAS = {
    # The PyTorch references for the parity tests. torch is pinned to the CPU build; uniception is installed
    # separately with --no-deps (see README) because its own requirements pull a conflicting torchvision.
    "test": [
        "pytest",
        "pytest-xdist",
        "hypothesis",
        "torch==2.13.0",
        "diffusers",
        "jaxtyping",
    ],
    "tpu": ["jax[tpu]"],
    "cuda": ["jax[cuda12]"],
}

setup(
    name="vggrpo_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["vggrpo_jax", "vggrpo_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL,
    extras_require=EXTRAS,
)
