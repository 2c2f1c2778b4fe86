"""Full-width Any4D (DINOv2-L, trunk 768, DPT 256) on 21 views at 336×518 lowers and compiles on 8 simulated devices.

The trunk and encoder depth is reduced to 2 here to keep the compile inside the test budget; the full 24-block
compile is `python benchmarks/any4d.py --aot` (figures in the issue notes). Checks are on the compiled program:
parameters are FSDP-sharded (each device holds about 1/8 of them), and activations are split over the devices.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tools/ under plain `pytest`

from benchmarks.any4d import aot_compile, report_aot
from vggrpo_jax.models.any4d import Any4D, Any4DConfig
from vggrpo_jax.parallel import abstract_state_shardings, make_mesh

VIEWS, HW = 21, (336, 518)


@pytest.fixture(scope="module")
def compiled():
    cfg = Any4DConfig.full(trunk_depth=2, encoder_depth=2, tap_layers=(0, 1))
    lowered, prog, secs = aot_compile(cfg, VIEWS, HW)
    return cfg, prog, report_aot(lowered, prog, secs)


def test_reduced_depth_full_width_compiles_sharded(compiled):
    cfg, prog, rep = compiled
    assert len(jax.devices()) == 8
    abstract = nnx.eval_shape(lambda: Any4D(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    shardings = abstract_state_shardings(params, make_mesh({"fsdp": -1}))
    leaves = jax.tree.leaves(params)
    param_bytes = sum(v.size * v.dtype.itemsize for v in leaves)
    per_device = sum(math.prod(s.shard_shape(v.shape)) * v.dtype.itemsize
                     for v, s in zip(leaves, jax.tree.leaves(shardings)))
    image_bytes = VIEWS * 3 * HW[0] * HW[1] * 4
    arg_bytes = rep["argument_gib"] * 1024**3
    # FSDP: every "embed"-annotated matrix (encoder, trunk) is split 8 ways; norms, biases and the conv heads stay
    # replicated. The compiled program's arguments are exactly that plus the (replicated) images.
    assert abs(arg_bytes - image_bytes - per_device) < 0.02 * per_device, (arg_bytes, per_device)
    assert per_device < 0.75 * param_bytes
    # The work is split: each device runs well under a third of the unpartitioned program's FLOPs (views and tokens
    # are spread over all 8 devices even though 21 views and 18 649 tokens do not divide by 8).
    assert rep["flops_per_device"] < 0.3 * rep["flops_total_unpartitioned"], rep
    # The global attention over 21·888+1 tokens and the DPT maps fit in a modest per-device working set.
    assert rep["temp_gib"] < 12.0, rep
    assert rep["flops_per_device"] > 1e11
