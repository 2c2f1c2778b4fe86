"""The backbones every job loads from its config: prompts, the UMT5 text encoder, the Wan DiT policy, the Wan VAE
and Any4D (the LGM's teacher), and config files by path.

Each builder either loads real checkpoints (the paths in the config) or, only where the config says so explicitly
(`allow_random_init`, used by configs/toy_random.py and tests), creates seeded random weights. A missing path is an error
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

from vggrpo_jax import zoo
from vggrpo_jax.checkpoint import restore_params
from vggrpo_jax.config_files import load_config_file  # noqa: F401  (re-exported: tests, benchmarks, the notebook)
from vggrpo_jax.data.prompts import read_prompts
from vggrpo_jax.errors import ConfigError, PathNotFoundError
from vggrpo_jax.lgm.host_init import random_any4d, random_init
from vggrpo_jax.models.any4d import Any4D, Any4DConfig
from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.models.wan.vae import WanVAE
from vggrpo_jax.models.wan.vae_config import WanVAEConfig
from vggrpo_jax.policy import Policy, wan_config_from

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ZOO_PREFIX = "zoo:"  # a checkpoint path "zoo:<name>" loads the toy world's shipped model <name> (vggrpo_jax.zoo)


def _require(path: str, key: str, what: str) -> str:
    if not path:
        raise ConfigError(f"config.{key} is empty: give the {what} (or set config.allow_random_init=True for a toy run)")
    if not os.path.exists(path):
        raise PathNotFoundError(f"config.{key}={path!r}: no such path")
    return path


# --------------------------------------------------------------------------------------------------- prompts
def load_prompts(config: Any, eval_split: bool = False) -> list[str]:
    """Training (or evaluation) prompt texts: a prompt file, or toyworld captions when prompts.path == 'toyworld'.

    prompts.split ("all" | "static" | "dynamic") filters jsonl prompts by their split.
    """
    return [text for text, _ in load_prompts_with_splits(config, eval_split)]


def load_prompts_with_splits(config: Any, eval_split: bool = False) -> list[tuple[str, str]]:
    """`load_prompts` with each prompt's split: "static" / "dynamic" from a jsonl file (or from the toyworld caption),
    "unsplit" for prompts that carry none (.txt files). "toyworld" draws captions of toyworld's default scenes
    (seed config.seed, +1 for evaluation); "toyworld:<builder config>" ("toyworld:zoo") takes the captions of that
    dataset's train split, or of its held-out split for evaluation (data/toyworld_tfds.py)."""
    path = config.prompts.eval_path if eval_split and config.prompts.eval_path else config.prompts.path
    if isinstance(path, str) and path.startswith("toyworld:"):  # a toyworld dataset's captions: its train split
        from vggrpo_jax.data.toyworld import caption_split  # noqa: PLC0415  (training), held-out split (evaluation)
        from vggrpo_jax.data.toyworld_tfds import captions  # noqa: PLC0415

        split, key = ("heldout", "eval_path") if eval_split and config.prompts.eval_path else ("train", "path")
        try:
            texts = captions(split, int(config.prompts.toyworld_count), path[len("toyworld:"):])
        except ValueError as e:
            raise ConfigError(f"config.prompts.{key}={path!r}: {e}") from None
        return [(p, caption_split(p)) for p in texts]
    if path == "toyworld":
        from vggrpo_jax.data.toyworld import caption_split, make_prompts  # noqa: PLC0415

        n = int(config.prompts.toyworld_count)
        return [(p, caption_split(p)) for p in make_prompts(n, seed=int(config.seed) + (1 if eval_split else 0))]
    if not path:
        raise ConfigError("config.prompts.path is empty: give a prompt file (.txt, one per line, or .jsonl)")
    prompts = read_prompts(path)
    split = config.prompts.split
    if split != "all":
        prompts = [p for p in prompts if p.split == split]
        if not prompts:
            raise ConfigError(f"{path}: no prompt has split {split!r} (config.prompts.split)")
    return [(p.text, p.split or "unsplit") for p in prompts]


# --------------------------------------------------------------------------------------------------- text
def _toy_tokenizer(workdir: str, corpus: Sequence[str]) -> Any:
    """A small sentencepiece tokenizer trained on the toy prompts (kept in workdir so a resumed run reuses it)."""
    from vggrpo_jax.data.spm import train_sentencepiece_tokenizer  # noqa: PLC0415
    from vggrpo_jax.data.text import load_tokenizer  # noqa: PLC0415

    out = os.path.join(workdir, "toy_tokenizer")
    if not os.path.isdir(out) and jax.process_index() == 0:
        train_sentencepiece_tokenizer(list(corpus) + [""], out, vocab_size=96)
    if jax.process_count() > 1:  # the other hosts read what process 0 wrote (workdir is shared)
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices("vggrpo_toy_tokenizer")
    return load_tokenizer(out)


def build_text_encoder(config: Any, workdir: str, mesh: Mesh | None, corpus: Sequence[str]) -> Any:
    """A data.text.TextEncoder: prompts → (B, 512, D) zero-padded UMT5 embeddings (with the on-disk cache).

    With text.cache_dir holding every prompt of `corpus` and the empty negative prompt, a data.text.CachedTextEncoder
    (same interface, cache only: no encoder weights are loaded)."""
    from vggrpo_jax.data.text import CachedTextEncoder, TextEncoder, open_cache, text_encoder_from_paths  # noqa: PLC0415

    t = config.text
    cache = t.cache_dir or None
    batch = int(t.batch_size)
    if zoo_name(t.checkpoint):
        shipped = zoo.manifest(zoo_name(t.checkpoint))["max_length"]
        if int(t.max_length) != shipped:  # the DiT was trained on embeddings zero-padded to this length
            raise ConfigError(f"config.text.max_length={t.max_length}: the zoo's text encoder pads to {shipped}")
        return zoo.load(zoo_name(t.checkpoint), cache=cache, batch_size=batch, mesh=mesh)
    if t.checkpoint or not config.allow_random_init:
        _require(t.tokenizer, "text.tokenizer", "UMT5 tokenizer directory")
        _require(t.checkpoint, "text.checkpoint", "UMT5 encoder checkpoint (tools/convert_umt5.py)")
        if cache:
            # Every prompt (and the empty negative) already cached: serve them without loading the encoder, so the
            # 11 GiB UMT5-XXL never occupies device memory next to the DiT (a single 16 GiB chip could not hold both).
            # The identity is the one text_encoder_from_paths would compute (weights as stored, compute dtype).
            entries = open_cache(cache, t.tokenizer, t.checkpoint, compute_dtype=_DTYPES[t.dtype])
            if not entries.missing([""] + list(corpus)):
                return CachedTextEncoder(entries)
        return text_encoder_from_paths(t.tokenizer, t.checkpoint, cache_dir=cache, batch_size=batch,
                                       compute_dtype=_DTYPES[t.dtype], mesh=mesh)
    from vggrpo_jax.models import umt5  # noqa: PLC0415

    tokenizer = _toy_tokenizer(workdir, corpus)
    cfg = umt5.tiny(vocab_size=max(len(tokenizer), 128), d_model=int(t.toy_dim))
    encoder = umt5.UMT5Encoder(cfg, nnx.Rngs(int(config.seed) + 2))
    return TextEncoder(tokenizer, encoder, f"toy-random-umt5-seed{int(config.seed) + 2}-d{int(t.toy_dim)}",
                       cache=cache, max_length=int(t.max_length), batch_size=batch, mesh=mesh)


# --------------------------------------------------------------------------------------------------- policy
def _check_dit_io(config: Any, wcfg: Any, text_dim: int, latent_channels: int) -> None:
    if wcfg.text_dim != text_dim or wcfg.in_channels != latent_channels:
        which = f"checkpoint {config.dit.checkpoint!r}" if config.dit.checkpoint else f"preset {config.dit.preset!r}"
        raise ConfigError(
            f"DiT {which} expects text_dim {wcfg.text_dim} and {wcfg.in_channels} latent channels, but the text "
            f"encoder gives {text_dim} and the VAE {latent_channels}"
        )


def build_policy(config: Any, mesh: Mesh | None, text_dim: int, latent_channels: int) -> Policy:
    """The Wan DiT with LoRA adapters: converted base weights (dit.checkpoint) or, for toy runs, a random init."""
    name = zoo_name(config.dit.checkpoint)
    if name:
        d = config.dit
        manifest = zoo.manifest(name)
        wcfg = WanConfig.from_diffusers_config(
            manifest["model"], dtype=d.dtype, param_dtype=d.param_dtype, scan_layers=manifest["scan_layers"],
            remat_policy=d.remat_policy, attention=d.attention, lora_rank=config.lora.rank,
            lora_alpha=config.lora.alpha, lora_targets=tuple(config.lora.targets))
        _check_dit_io(config, wcfg, text_dim, latent_channels)
        return Policy.load_shipped(wcfg, zoo.weights_dir(name), lora_seed=int(config.lora.init_seed), mesh=mesh)
    if config.dit.checkpoint or not config.allow_random_init:
        wcfg = wan_config_from(config)
        _check_dit_io(config, wcfg, text_dim, latent_channels)
        path = _require(config.dit.checkpoint, "dit.checkpoint", "converted Wan DiT (tools/convert_wan.py)")
        return Policy.load(wcfg, path, lora_seed=int(config.lora.init_seed), mesh=mesh)
    # Toy: the tiny preset adapted to the toy text encoder's width and the VAE's latent channels.
    wcfg = wan_config_from(config, text_dim=text_dim, in_channels=latent_channels, out_channels=latent_channels)
    return Policy.random(wcfg, seed=int(config.seed) + 3, mesh=mesh, lora_seed=int(config.lora.init_seed))


# --------------------------------------------------------------------------------------------------- geometry
# VAE and Any4D from a config's `vae` / `any4d` sections (LGM and GRPO configs share them) and `seed`.
def zoo_name(path: Any) -> str | None:
    """The zoo model a checkpoint path names ("zoo:vae" → "vae"), or None for a filesystem path."""
    if isinstance(path, str) and path.startswith(ZOO_PREFIX):
        name = path[len(ZOO_PREFIX):]
        if name not in zoo.REGISTRY:
            raise ConfigError(f"checkpoint {path!r}: the zoo has no model {name!r}; it has {sorted(zoo.REGISTRY)}")
        return name
    return None


def vae_config(c: Any) -> WanVAEConfig:
    """The preset's architecture, or the shipped model's (from its manifest) when vae.checkpoint is "zoo:vae"."""
    name = zoo_name(c.vae.checkpoint)
    if name:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in zoo.manifest(name)["model"].items()}
        return WanVAEConfig(**fields, dtype=_DTYPES[c.vae.dtype])
    return getattr(WanVAEConfig, c.vae.preset)(dtype=_DTYPES[c.vae.dtype])


def any4d_config(c: Any) -> Any4DConfig:
    """The preset's architecture, or the shipped model's (from its manifest) when any4d.checkpoint is
    "zoo:geometry"; dtype and LoRA from the config either way."""
    name = zoo_name(c.any4d.checkpoint)
    if name:
        return Any4DConfig.from_fields(zoo.manifest(name)["model"], dtype=_DTYPES[c.any4d.dtype],
                                       lora_rank=int(c.any4d.lora_rank), lora_alpha=float(c.any4d.lora_alpha))
    factory = getattr(Any4DConfig, c.any4d.preset)  # one of models.any4d.config.ANY4D_PRESETS (validated)
    return factory(dtype=_DTYPES[c.any4d.dtype], lora_rank=int(c.any4d.lora_rank),
                   lora_alpha=float(c.any4d.lora_alpha))


def _is_orbax_dir(path: str) -> bool:
    return os.path.isdir(path) and any(n.startswith("_") or n == "d" for n in os.listdir(path)) and not any(
        n.endswith((".safetensors", ".json", ".pth")) and n != "_METADATA" for n in os.listdir(path)
    )


def build_vae(c: Any) -> WanVAE:
    """The Wan VAE: converted weights (diffusers dir / .safetensors / original .pth / orbax dir), the toy zoo's
    trained VAE ("zoo:vae"), or random weights (lgm/host_init.py, seed config.seed) when vae.checkpoint is empty
    (tests only)."""
    cfg = vae_config(c)
    path = c.vae.checkpoint
    if not path:
        return random_init(lambda: WanVAE(cfg, nnx.Rngs(0)), c.seed)
    if zoo_name(path):
        return zoo.load(zoo_name(path), dtype=cfg.dtype)
    if not os.path.exists(path):
        raise PathNotFoundError(f"config.vae.checkpoint={path!r}: no such path")
    abstract = nnx.eval_shape(lambda: WanVAE(cfg, nnx.Rngs(0)))
    if _is_orbax_dir(path):
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
        return nnx.merge(graphdef, restore_params(path, params), rest)
    from vggrpo_jax.convert.wan_vae import from_torch_state_dict  # noqa: PLC0415

    return from_torch_state_dict(path, cfg)


def build_any4d(c: Any) -> Any4D:
    """Any4D: the released .pth, an orbax dir from tools/convert_any4d.py (base weights; LoRA adapters get their
    identity init), the toy zoo's trained geometry model ("zoo:geometry"), or random weights (lgm/host_init.py, seed
    config.seed + 1) when any4d.checkpoint is empty (a random teacher: tests only)."""
    cfg = any4d_config(c)
    path = c.any4d.checkpoint
    if not path:
        return random_any4d(cfg, c.seed + 1)
    if zoo_name(path):
        return zoo.load(zoo_name(path), dtype=cfg.dtype, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                        lora_seed=int(c.seed) + 1)
    if not os.path.exists(path):
        raise PathNotFoundError(f"config.any4d.checkpoint={path!r}: no such path")
    if os.path.isfile(path):
        from vggrpo_jax.convert.any4d import load_any4d  # noqa: PLC0415

        return load_any4d(path, cfg)
    abstract = nnx.eval_shape(lambda: Any4D(cfg, nnx.Rngs(0)))
    graphdef, lora, params, rest = nnx.split(abstract, LoRAParam, nnx.Param, ...)
    params = restore_params(path, params)
    lora = jax.jit(lambda: nnx.state(Any4D(cfg, nnx.Rngs(c.seed + 1)), LoRAParam))()
    return nnx.merge(graphdef, lora, params, rest)


def pad_batch(trimmed: Sequence[np.ndarray], max_length: int) -> np.ndarray:
    """Trimmed (len_i, D) embeddings → (B, max_length, D) float32, zero after each prompt's tokens."""
    from vggrpo_jax.data.text import pad_embeddings  # noqa: PLC0415

    return pad_embeddings(list(trimmed), max_length)[0]
