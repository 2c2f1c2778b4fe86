"""Converts the released Any4D checkpoint (any4d_4v_combined.pth) to orbax parameters.

    python tools/convert_any4d.py --checkpoint any4d_4v_combined.pth --out /path/to/any4d_params [--force]

Reads ckpt["model"] lazily (memory-mapped), drops the images-only-unused geometric-input encoders, folds aliases, and
fails with a list of every missing / unexpected / mis-shaped key.
"""

from __future__ import annotations

import argparse
import sys

from vggrpo_jax import cli
from vggrpo_jax.checkpoint import save_params
from vggrpo_jax.convert.common import open_state_dict
from vggrpo_jax.convert.any4d import from_torch_state_dict
from vggrpo_jax.models.any4d import Any4DConfig


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="torch.save dict with the weights under ['model']")
    parser.add_argument("--out", required=True, help="output orbax directory")
    parser.add_argument("--config", choices=("full", "tiny"), default="full")
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)
    config = Any4DConfig.full() if args.config == "full" else Any4DConfig.tiny()
    cli.require_new(args.out, "--out", args.force)
    state = open_state_dict(cli.require_path(args.checkpoint, "--checkpoint"), subkey="model")
    params = from_torch_state_dict(state, config)
    save_params(args.out, params, force=args.force)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
