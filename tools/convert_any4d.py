"""Converts the released Any4D checkpoint (any4d_4v_combined.pth) to orbax parameters.

    python tools/convert_any4d.py --src any4d_4v_combined.pth --dst /path/to/any4d_params [--preset full] [--force]

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
from vggrpo_jax.models.any4d.config import ANY4D_PRESETS


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The converters' one flag scheme: --src, --dst, --preset, --dtype, --force (old spellings kept as aliases).
    parser.add_argument("--src", "--checkpoint", dest="src", required=True,
                        help="torch.save dict with the weights under ['model']")
    parser.add_argument("--dst", "--out", dest="dst", required=True, help="output orbax directory")
    parser.add_argument("--preset", "--config", dest="preset", choices=ANY4D_PRESETS, default="full",
                        help="architecture preset")
    parser.add_argument("--force", action="store_true", help="overwrite --dst")
    args = parser.parse_args(argv)
    config = getattr(Any4DConfig, args.preset)()
    cli.require_new(args.dst, "--dst", args.force)
    state = open_state_dict(cli.require_path(args.src, "--src"), subkey="model")
    params = from_torch_state_dict(state, config)
    save_params(args.dst, params, force=args.force)
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
