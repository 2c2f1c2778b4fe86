"""Convert a UMT5 encoder checkpoint (transformers dir or the original Wan .pth) to an orbax params directory.

    python tools/convert_umt5.py --checkpoint Wan2.1-T2V-1.3B-Diffusers/text_encoder --out ckpt/umt5_xxl
    python tools/convert_umt5.py --checkpoint Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth --out ckpt/umt5_xxl

Writes OUT/params (orbax), OUT/umt5_config.json and OUT/fingerprint.txt (the source bytes + storage dtype; the key of
the text-embedding cache). Fails, listing every missing/unexpected/mis-shaped key, if the checkpoint does not match.
"""

from __future__ import annotations

import argparse
import sys

import jax.numpy as jnp

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from vggrpo_jax import cli  # noqa: PLC0415

    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="transformers dir / .safetensors / Wan .pth")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--config",
        default=None,
        help="transformers config.json (default: the checkpoint dir's config.json, or the umt5_xxl preset for Wan .pth)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="storage dtype of the weights")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vggrpo_jax.convert import umt5  # noqa: PLC0415 - keep --help fast
    from vggrpo_jax.models.umt5 import UMT5Config  # noqa: PLC0415

    from vggrpo_jax import cli  # noqa: PLC0415

    cli.require_path(args.checkpoint, "--checkpoint")
    cli.require_new(args.out, "--out", args.force)
    config = None
    if args.config:
        config = UMT5Config.from_hf_config(cli.read_json(args.config))
    model, fingerprint = umt5.load_encoder(args.checkpoint, config, dtype=DTYPES[args.dtype])
    umt5.save_converted(model, args.out, fingerprint, force=args.force)
    cfg = model.config
    print(
        f"converted {args.checkpoint} -> {args.out}: {cfg.num_layers} layers, d_model {cfg.d_model}, "
        f"vocab {cfg.vocab_size}, {args.dtype}, fingerprint {fingerprint[:16]}"
    )
    return 0


if __name__ == "__main__":
    from vggrpo_jax import cli

    sys.exit(cli.run(main))
