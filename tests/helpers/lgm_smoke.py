"""configs/lgm_toy.py shrunk to a smoke test: few clips, one stitching candidate, a few steps."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs"))
from lgm_toy import get_config as _toy  # noqa: E402

sys.path.pop(0)


def get_config():
    c = _toy()
    c.data.toyworld.num_clips = 6
    c.data.heldout_fraction = 0.34
    c.stitch.layers = [2]
    c.stitch.variants = {"conv": {}}
    c.stitch.steps = 4
    c.align.steps = 4
    c.eval.max_clips = 2
    c.eval.sigmas = [0.0, 0.5]
    c.train.save_every = 2
    return c
