"""The README main job's LGM (configs/toy.py builds it first, in <workdir>/lgm): configs/lgm_zoo.py cut to a few
minutes on a 2-core CPU — real clips only, one stitching layer and connector, short fits.

    python -m vggrpo_jax.train_lgm --config=configs/lgm_zoo_quick.py --workdir=/tmp/lgm_zoo_quick

configs/lgm_zoo.py is the full construction (both sources, the stitching search over ℓ ∈ {1..4} and two connectors,
64 + 64 held-out clips); this one reuses its choices (see the notes there and issue 13's figures).
"""

import os

from vggrpo_jax.config_files import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lgm_zoo.py"))
    c.data.toyworld.num_clips = 144
    c.data.generated.max_clips = 0
    c.data.heldout_fraction = 1 / 9  # 16 held-out clips
    c.stitch.layers = [2]
    c.stitch.variants = {"conv": {}}
    c.stitch.steps = 150
    c.align.steps = 200
    c.eval.max_clips = 16
    c.eval.sigmas = [0.0, 0.3]
    return c
