"""Building the GRPO run's components from its config: prompts, text conditioning, policy, LGM, RGB evaluator.

Each builder either loads real checkpoints (the paths in the config) or, only where the config says so explicitly
(`allow_random_init`, used by configs/toy.py and tests), creates seeded random weights. A missing path is an error
that names the config key, never a silent random init.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vggrpo_jax.data.prompts import read_prompts
from vggrpo_jax.policy import Policy, wan_config_from

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _require(path: str, key: str, what: str) -> str:
    if not path:
        raise ValueError(f"config.{key} is empty: give the {what} (or set config.allow_random_init=True for a toy run)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config.{key}={path!r} does not exist")
    return path


# --------------------------------------------------------------------------------------------------- prompts
def load_prompts(config: Any, eval_split: bool = False) -> list[str]:
    """Training (or evaluation) prompt texts: a prompt file, or toyworld captions when prompts.path == 'toyworld'.

    prompts.split ("all" | "static" | "dynamic") filters jsonl prompts by their split.
    """
    path = config.prompts.eval_path if eval_split and config.prompts.eval_path else config.prompts.path
    if path == "toyworld":
        from vggrpo_jax.data.toyworld import make_prompts  # noqa: PLC0415

        n = int(config.prompts.toyworld_count)
        return make_prompts(n, seed=int(config.seed) + (1 if eval_split else 0))
    if not path:
        raise ValueError("config.prompts.path is empty: give a prompt file (.txt, one per line, or .jsonl)")
    prompts = read_prompts(path)
    split = config.prompts.split
    if split != "all":
        prompts = [p for p in prompts if p.split == split]
        if not prompts:
            raise ValueError(f"{path}: no prompt has split {split!r} (config.prompts.split)")
    return [p.text for p in prompts]


# --------------------------------------------------------------------------------------------------- text
def _toy_tokenizer(workdir: str, corpus: Sequence[str]) -> Any:
    """A small sentencepiece tokenizer trained on the toy prompts (kept in workdir so a resumed run reuses it)."""
    from vggrpo_jax.data.spm import train_sentencepiece_tokenizer  # noqa: PLC0415
    from vggrpo_jax.data.text import load_tokenizer  # noqa: PLC0415

    out = os.path.join(workdir, "toy_tokenizer")
    if not os.path.isdir(out) and jax.process_index() == 0:
        train_sentencepiece_tokenizer(list(corpus) + [""], out, vocab_size=96)
    return load_tokenizer(out)


def build_text_encoder(config: Any, workdir: str, mesh: Mesh | None, corpus: Sequence[str]) -> Any:
    """A data.text.TextEncoder: prompts → (B, 512, D) zero-padded UMT5 embeddings (with the on-disk cache)."""
    from vggrpo_jax.data.text import TextEncoder, text_encoder_from_paths  # noqa: PLC0415

    t = config.text
    cache = t.cache_dir or None
    batch = int(t.batch_size)
    if t.checkpoint or not config.allow_random_init:
        _require(t.tokenizer, "text.tokenizer", "UMT5 tokenizer directory")
        _require(t.checkpoint, "text.checkpoint", "UMT5 encoder checkpoint (tools/convert_umt5.py)")
        return text_encoder_from_paths(t.tokenizer, t.checkpoint, cache_dir=cache, batch_size=batch,
                                       compute_dtype=_DTYPES[t.dtype], mesh=mesh)
    from vggrpo_jax.models import umt5  # noqa: PLC0415

    tokenizer = _toy_tokenizer(workdir, corpus)
    cfg = umt5.tiny(vocab_size=max(len(tokenizer), 128), d_model=int(t.toy_dim))
    encoder = umt5.UMT5Encoder(cfg, nnx.Rngs(int(config.seed) + 2))
    return TextEncoder(tokenizer, encoder, f"toy-random-umt5-seed{int(config.seed) + 2}-d{int(t.toy_dim)}",
                       cache=cache, max_length=int(t.max_length), batch_size=batch, mesh=mesh)


# --------------------------------------------------------------------------------------------------- policy
def build_policy(config: Any, mesh: Mesh | None, text_dim: int, latent_channels: int) -> Policy:
    """The Wan DiT with LoRA adapters: converted base weights (dit.checkpoint) or, for toy runs, a random init."""
    if config.dit.checkpoint or not config.allow_random_init:
        wcfg = wan_config_from(config)
        if wcfg.text_dim != text_dim or wcfg.in_channels != latent_channels:
            raise ValueError(
                f"DiT preset {config.dit.preset!r} expects text_dim {wcfg.text_dim} and {wcfg.in_channels} latent "
                f"channels, but the text encoder gives {text_dim} and the VAE {latent_channels}"
            )
        path = _require(config.dit.checkpoint, "dit.checkpoint", "converted Wan DiT (tools/convert_wan.py)")
        return Policy.load(wcfg, path, lora_seed=int(config.lora.init_seed), mesh=mesh)
    # Toy: the tiny preset adapted to the toy text encoder's width and the VAE's latent channels.
    wcfg = wan_config_from(config, text_dim=text_dim, in_channels=latent_channels, out_channels=latent_channels)
    return Policy.random(wcfg, seed=int(config.seed) + 3, mesh=mesh, lora_seed=int(config.lora.init_seed))


# --------------------------------------------------------------------------------------------------- geometry
def load_config_file(path: str) -> Any:
    """get_config() of a config file (e.g. configs/lgm_toy.py)."""
    import importlib.util  # noqa: PLC0415

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_vggrpo_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def build_geometry(config: Any, workdir: str) -> tuple[Any, Any, Any]:
    """(VAE, Any4D, LGM).

    With lgm.checkpoint: the VAE and Any4D come from config.vae / config.any4d and the LGM from that directory.
    With lgm.build_config instead (toy runs): the LGM is first constructed by `vggrpo_jax.train_lgm` with that config
    in <workdir>/lgm (resumable; skipped when already there), and the VAE and Any4D are exactly the ones it was
    built with (that config's sections and seed), so the LGM and its teacher always belong together.
    """
    from vggrpo_jax import train_lgm  # noqa: PLC0415
    from vggrpo_jax.lgm.model import load_lgm  # noqa: PLC0415

    if config.lgm.checkpoint:
        source = config
        for key, what in (("vae", "Wan VAE checkpoint"), ("any4d", "Any4D checkpoint")):
            if not config[key].checkpoint and not config.allow_random_init:
                _require("", f"{key}.checkpoint", what)
        path = _require(config.lgm.checkpoint, "lgm.checkpoint", "LGM directory written by vggrpo_jax.train_lgm")
    elif config.lgm.build_config:
        source = load_config_file(config.lgm.build_config)
        path = os.path.join(workdir, "lgm", "lgm")
        if not os.path.isfile(os.path.join(path, "lgm.json")):
            train_lgm.run(source, os.path.join(workdir, "lgm"))
    else:
        raise ValueError("config.lgm.checkpoint is empty: give the LGM directory written by vggrpo_jax.train_lgm "
                         "(or config.lgm.build_config to build one first)")
    vae = train_lgm.build_vae(source)
    any4d = train_lgm.build_any4d(source)
    return vae, any4d, load_lgm(path, any4d)


def pad_batch(trimmed: Sequence[np.ndarray], max_length: int) -> np.ndarray:
    """Trimmed (len_i, D) embeddings → (B, max_length, D) float32, zero after each prompt's tokens."""
    from vggrpo_jax.data.text import pad_embeddings  # noqa: PLC0415

    return pad_embeddings(list(trimmed), max_length)[0]
