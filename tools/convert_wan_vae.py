#!/usr/bin/env python
"""Converts a Wan VAE checkpoint (diffusers safetensors directory, or the original Wan2.1_VAE.pth / Wan2.2_VAE.pth) to
an orbax parameter checkpoint for vggrpo_jax.models.wan.vae.WanVAE.

    python tools/convert_wan_vae.py --src Wan2.1-T2V-1.3B-Diffusers/vae --dst ckpt/wan21_vae
    python tools/convert_wan_vae.py --src Wan2.2_VAE.pth --variant wan22 --dst ckpt/wan22_vae [--dtype bfloat16]

The architecture comes from the source's config.json (diffusers), else from --config (a diffusers config.json) or
--variant. The config is written next to the checkpoint as <dst>.config.json. Any missing, unexpected or mis-shaped
key aborts the conversion with the full list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp
from flax import nnx

from vggrpo_jax import cli
from vggrpo_jax.checkpoint import save_params
from vggrpo_jax.convert.wan_vae import from_torch_state_dict, load_config
from vggrpo_jax.errors import PathNotFoundError
from vggrpo_jax.models.wan.vae import WanVAEConfig

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}
_VARIANTS = {"wan21": WanVAEConfig.wan21, "wan22": WanVAEConfig.wan22}


def _config(args: argparse.Namespace) -> WanVAEConfig:
    if args.config:
        return load_config(args.config)
    if args.variant:
        return _VARIANTS[args.variant]()
    src = args.src if os.path.isdir(args.src) else os.path.dirname(os.path.abspath(args.src))
    try:
        return load_config(src)
    except FileNotFoundError:
        raise PathNotFoundError(f"{args.src}: no config.json found; pass --variant wan21|wan22 or --config") from None


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="diffusers VAE dir / pipeline root / .safetensors / original .pth")
    parser.add_argument("--dst", required=True, help="output orbax directory")
    parser.add_argument("--dtype", default="float32", choices=sorted(_DTYPES), help="parameter dtype (default fp32)")
    parser.add_argument("--variant", choices=sorted(_VARIANTS), help="architecture preset for a .pth without config")
    parser.add_argument("--config", help="a diffusers VAE config.json describing the architecture")
    parser.add_argument("--force", action="store_true", help="overwrite --dst")
    args = parser.parse_args(argv)

    cli.require_path(args.src, "--src")
    cli.require_new(args.dst, "--dst", args.force)
    config = _config(args)
    model = from_torch_state_dict(args.src, config, dtype=_DTYPES[args.dtype])
    save_params(args.dst, nnx.state(model, nnx.Param), force=args.force)
    with open(os.path.abspath(args.dst) + ".config.json", "w") as fh:
        json.dump(config.to_diffusers_config(), fh, indent=1)
    n = sum(v.get_value().size for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    print(f"converted {n / 1e6:.1f}M parameters ({args.dtype}) from {args.src} to {os.path.abspath(args.dst)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
