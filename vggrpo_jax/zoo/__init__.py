"""The toy world's shipped models: ``from vggrpo_jax import zoo; vae = zoo.load("vae")``.

``VIDEO`` is the clip shape (frames, height, width) every toy-world model is trained on: the one place it is set.
17 frames (Wan: F = 1 + 4k, so 5 latent frames and ≥ 5 views for the geometry path) of 64 × 64 pixels (8 × 8 Wan
latents).

Each model lives in ``weights/<name>/`` (``model.safetensors`` + ``manifest.json``: config, data seeds, steps,
held-out metrics, sha256), written by its training job's export step. ``REGISTRY`` maps each name to the loader
that rebuilds the model from that directory — one entry per model; the loaders return the real classes with their
real call conventions (video (B, C, F, H, W) in [−1, 1]).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

VIDEO: tuple[int, int, int] = (17, 64, 64)

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# name → ("module:function" taking the weights directory and returning the ready model, the command that trains it)
REGISTRY: dict[str, tuple[str, str]] = {
    "vae": ("vggrpo_jax.toy_vae.export:load_model",
            "python -m vggrpo_jax.train_vae --config=configs/vae_toy.py --workdir=DIR "
            "--config.export.dir=vggrpo_jax/zoo/weights/vae"),
    "geometry": ("vggrpo_jax.geometry_model.export:load_model",
                 "python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py --workdir=DIR "
                 "--config.export.dir=vggrpo_jax/zoo/weights/geometry"),
    "dit": ("vggrpo_jax.sft.export:load_dit",
            "python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=DIR "
            "--config.export.dir=vggrpo_jax/zoo/weights/dit --config.export.text_dir=vggrpo_jax/zoo/weights/text"),
    "text": ("vggrpo_jax.data.toy_text:load_text",
             "python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=DIR "
             "--config.export.dir=vggrpo_jax/zoo/weights/dit --config.export.text_dir=vggrpo_jax/zoo/weights/text"),
}


def weights_dir(name: str) -> str:
    """Directory of model ``name``'s shipped files."""
    _check_name(name)
    return os.path.join(WEIGHTS_DIR, name)


def manifest(name: str) -> dict[str, Any]:
    """Model ``name``'s manifest (config, data seeds, steps, held-out metrics, sha256)."""
    path = os.path.join(weights_dir(name), "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"zoo: {name!r} is not shipped ({path} is missing); train it with: {REGISTRY[name][1]}")
    with open(path) as f:
        return json.load(f)


def load(name: str, **kwargs: Any) -> Any:
    """The ready model ``name`` (one of ``REGISTRY``), loaded from its shipped weights (sha256-checked)."""
    manifest(name)  # a missing model fails here, naming the command that makes it
    module, fn = REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(module), fn)(weights_dir(name), **kwargs)


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        raise KeyError(f"zoo: unknown model {name!r}; shipped models: {sorted(REGISTRY)}")
