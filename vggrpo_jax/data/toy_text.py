"""The toy world's text encoder as shipped: the sentencepiece tokenizer trained on the toyworld captions plus the
small UMT5 encoder (seeded random weights, frozen: the toy DiT learned to read its embeddings), so `zoo.load("text")`
gives back exactly the conditioning the toy DiT was trained on.

    <dir>/tokenizer/            the tokenizer files (transformers' save_pretrained; no pickles)
    <dir>/model.safetensors     the UMT5 encoder parameters (vggrpo_jax/shipped.py)
    <dir>/manifest.json         {"format": "vggrpo_text/1", "model": UMT5Config fields, "max_length", "fingerprint",
                                 "sha256", "bytes"}
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Mapping

from flax import nnx

from vggrpo_jax.data.text import TextEncoder, load_tokenizer
from vggrpo_jax.models import umt5
from vggrpo_jax.shipped import load_state, read_manifest, save_state

FORMAT = "vggrpo_text/1"


def save_text(directory: str, tokenizer_dir: str, encoder: umt5.UMT5Encoder, max_length: int, fingerprint: str,
              info: Mapping[str, Any] | None = None) -> dict:
    """Writes the tokenizer (copied from `tokenizer_dir`), the encoder weights and the manifest; returns it."""
    cfg = {f.name: getattr(encoder.config, f.name) for f in dataclasses.fields(encoder.config)
           if f.name not in ("dtype", "param_dtype")}
    tok_out = os.path.join(directory, "tokenizer")
    os.makedirs(directory, exist_ok=True)
    if os.path.abspath(tok_out) != os.path.abspath(tokenizer_dir):
        shutil.rmtree(tok_out, ignore_errors=True)
        shutil.copytree(tokenizer_dir, tok_out)
    return save_state(directory, nnx.state(encoder, nnx.Param), FORMAT,
                      {"model": cfg, "max_length": int(max_length), "fingerprint": fingerprint, **dict(info or {})})


def load_text(directory: str, **kwargs: Any) -> TextEncoder:
    """The shipped toy text encoder: prompts → (B, 512, D) zero-padded embeddings (`TextEncoder`; kwargs such as
    batch_size, cache, mesh go to it)."""
    manifest = read_manifest(directory, FORMAT)
    config = umt5.UMT5Config(**manifest["model"])
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: umt5.UMT5Encoder(config, nnx.Rngs(0))), nnx.Param, ...)
    encoder = nnx.merge(graphdef, load_state(directory, params, manifest), rest)
    kwargs.setdefault("max_length", manifest["max_length"])
    return TextEncoder(load_tokenizer(os.path.join(directory, "tokenizer")), encoder, manifest["fingerprint"],
                       **kwargs)


__all__ = ["FORMAT", "load_text", "save_text"]
