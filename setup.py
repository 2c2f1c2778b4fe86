"""vggrpo_jax: VGGRPO (GRPO with 4D latent rewards) for Wan video models, in JAX/Flax NNX."""
from setuptools import find_packages, setup

# Lower bounds are the versions the project is tested with; upper bounds keep a fresh install on the same minor
# series of the fast-moving JAX stack (Flax NNX and orbax APIs change between minors).
INSTALL = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "transformers>=5.24,<6",
    "einops",
    "ml_collections>=1.1",
    "absl-py",
    "grain>=0.2.18,<0.3",
    # The toyworld dataset builder/reader (builds and reads ArrayRecord without TensorFlow); tfds's path utilities
    # need importlib_resources, which it does not declare.
    "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources",
    "numpy",
    "safetensors",
    "sentencepiece",
    "protobuf",
    "imageio",
    "imageio-ffmpeg",
    "matplotlib",
    "tqdm",
    "tensorboardX",
    "opencv-python-headless>=4.5",  # evaluation: SIFT, RANSAC fundamental matrices, Farnebäck flow
]

EXTRAS = {
    # The PyTorch references for the parity tests. torch is pinned to the CPU build; uniception is installed
    # separately with --no-deps (see README) because its own requirements pull a conflicting torchvision.
    "test": [
        "pytest",
        "pytest-xdist",
        "hypothesis",
        "torch==2.13.0",
        "diffusers==0.42.1",  # the parity reference: pinned so its Wan modules cannot change under the tests
        "transformers==5.24.0",
        "jaxtyping",
        # tests/test_colab_notebook.py executes notebooks/colab_tpu.ipynb headless in a Jupyter kernel.
        "nbformat>=5.9",
        "nbclient>=0.10",
        "ipykernel>=6.25",
    ],
    "tpu": ["jax[tpu]"],
    "cuda": ["jax[cuda12]"],
}

setup(
    name="vggrpo_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["vggrpo_jax", "vggrpo_jax.*"]),
    # The zoo's shipped weights and manifests (vggrpo_jax/zoo/weights/<name>/), so a fresh install loads them.
    package_data={"vggrpo_jax.zoo": ["weights/*/*.safetensors", "weights/*/*.json"]},
    python_requires=">=3.10",
    install_requires=INSTALL,
    extras_require=EXTRAS,
)
