#!/usr/bin/env python
"""Converts a Wan DiT checkpoint (diffusers sharded safetensors + index json, or an original Wan checkpoint) to an
orbax parameter checkpoint for vggrpo_jax.models.wan.WanTransformer.

    python tools/convert_wan.py --src Wan2.1-T2V-1.3B-Diffusers/transformer --dst ckpt/wan21_dit --dtype bfloat16
    python tools/convert_wan.py --src Wan2.2-TI2V-5B --dst ckpt/wan22_dit          # original names, its config.json
    python tools/convert_wan.py --src model.safetensors --preset wan21_14b --dst ckpt/wan21_14b_dit

Tensors are read one at a time (safetensors are memory-mapped), so a 14B checkpoint never needs two full copies in
RAM. The architecture comes from the source's config.json (diffusers or original), else --config or --preset. Any
missing, unexpected or mis-shaped key aborts the conversion with the full list. The architecture is written next to
the checkpoint as <dst>.config.json (diffusers form). LoRA adapters are not part of a base checkpoint.
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
from vggrpo_jax.convert.wan_transformer import from_torch_state_dict
from vggrpo_jax.errors import PathNotFoundError
from vggrpo_jax.models.wan import WanConfig

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}
_PRESETS = ("wan21_1_3b", "wan22_ti2v_5b", "wan21_14b", "tiny", "tiny22")


def _source(src: str) -> str:
    """A diffusers pipeline root resolves to its transformer/ folder."""
    sub = os.path.join(src, "transformer")
    return sub if os.path.isdir(sub) else src


def _config(args: argparse.Namespace, src: str, dtype) -> WanConfig:
    runtime = dict(param_dtype=dtype, lora_rank=0)
    if args.config:
        return WanConfig.from_json_dict(cli.read_json(args.config), **runtime)
    if args.preset:
        return WanConfig.preset(args.preset, **runtime)
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise PathNotFoundError(f"{args.src}: no config.json found; pass --preset {'|'.join(_PRESETS)} or --config")
    return WanConfig.from_json_dict(cli.read_json(path), **runtime)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="diffusers transformer dir / pipeline root / .safetensors / .pth")
    parser.add_argument("--dst", required=True, help="output orbax directory")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(_DTYPES), help="parameter dtype")
    parser.add_argument("--preset", choices=_PRESETS, help="architecture preset when the source has no config.json")
    parser.add_argument("--config", help="a diffusers or original Wan config.json describing the architecture")
    parser.add_argument("--force", action="store_true", help="overwrite --dst")
    args = parser.parse_args(argv)

    src = _source(cli.require_path(args.src, "--src"))
    cli.require_new(args.dst, "--dst", args.force)
    dtype = _DTYPES[args.dtype]
    config = _config(args, src, dtype)
    model = from_torch_state_dict(src, config, dtype=dtype)
    params = nnx.state(model, nnx.Param)
    save_params(args.dst, params, force=args.force)
    with open(os.path.abspath(args.dst) + ".config.json", "w") as fh:
        json.dump(config.to_diffusers_config(), fh, indent=1)
    n = sum(v.get_value().size for _, v in nnx.to_flat_state(params))
    print(f"converted {n / 1e6:.1f}M parameters ({args.dtype}) from {src} to {os.path.abspath(args.dst)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
