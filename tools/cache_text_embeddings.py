"""Fill the on-disk text-embedding cache for a prompt file, so training never loads the 5.7B UMT5 encoder.

    python tools/cache_text_embeddings.py --prompts prompts/train.jsonl --tokenizer Wan2.1-T2V-1.3B-Diffusers/tokenizer \
        --encoder ckpt/umt5_xxl --out cache/text

--encoder is a converted orbax dir (tools/convert_umt5.py) or a PyTorch checkpoint (transformers dir / Wan .pth).
The empty-string negative prompt is always cached too. Entries already present are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from vggrpo_jax import cli  # noqa: PLC0415

    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", required=True, help=".txt (one per line) or .jsonl prompt file")
    parser.add_argument("--tokenizer", required=True, help="local tokenizer directory")
    parser.add_argument("--encoder", required=True, help="converted orbax dir or PyTorch checkpoint")
    parser.add_argument("--out", required=True, help="cache root directory")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compute-dtype", choices=sorted(DTYPES), default=None, help="matmul dtype (default: fp32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vggrpo_jax import cli  # noqa: PLC0415
    from vggrpo_jax.data.prompts import read_prompts  # noqa: PLC0415
    from vggrpo_jax.data.text import text_encoder_from_paths  # noqa: PLC0415

    prompts = [p.text for p in read_prompts(args.prompts)]
    cli.require_path(args.tokenizer, "--tokenizer")
    cli.require_path(args.encoder, "--encoder")
    encoder = text_encoder_from_paths(
        args.tokenizer,
        args.encoder,
        cache_dir=args.out,
        batch_size=args.batch_size,
        compute_dtype=DTYPES[args.compute_dtype] if args.compute_dtype else None,
    )
    todo = encoder.cache.missing([""] + prompts)
    start = time.time()
    for i in range(0, len(todo), args.batch_size):
        encoder.encode_trimmed(todo[i : i + args.batch_size])
        print(f"  {min(i + args.batch_size, len(todo))}/{len(todo)} encoded", flush=True)
    print(
        f"{len(prompts)} prompts (+ negative), {len(todo)} newly encoded in {time.time() - start:.1f}s; "
        f"cache {encoder.cache.dir} (identity {encoder.identity[:16]})"
    )
    return 0


if __name__ == "__main__":
    from vggrpo_jax import cli

    sys.exit(cli.run(main))
