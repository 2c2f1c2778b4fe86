"""AOT: the full Wan2.1 VAE encodes and decodes 81×480×832 videos on the 8-device simulated mesh, compiled on
abstract shapes only (no weights, no data). Batch sharding here (8 videos, one per device: fast to compile);
benchmarks/vae.py --aot also compiles one video split over width and extrapolates FLOPs over the scan.
Prints per-device memory and XLA's FLOP count (a lax.scan body is counted once).
"""

from __future__ import annotations

import jax
import pytest

from vggrpo_jax.models.wan.vae import WanVAEConfig
from vggrpo_jax.models.wan.vae_aot import compile_vae
from vggrpo_jax.parallel import make_mesh


@pytest.mark.parametrize("what", ["encode", "decode"])
def test_wan21_vae_81x480x832_compiles_batch_sharded(what):
    assert jax.device_count() == 8
    mesh = make_mesh({"data": 8})
    figures = compile_vae(WanVAEConfig.wan21(), mesh, 8, 81, 480, 832, what)
    print(figures.line())
    # One video per device: the steady-state chunk's activations (not the 81 frames) bound the working set.
    # Without the chunked scan, decoding 81×480×832 at 96 channels would need well over 30 GiB per video.
    assert 0 < figures.temp_bytes < 10 * 2**30
    io = 8 * 3 * 81 * 480 * 832 * 4 / 8  # the per-device share of the video
    assert figures.argument_bytes < 0.6 * 2**30 + io and figures.output_bytes < 0.6 * 2**30
    assert figures.flops > 0
