"""One full GRPO iteration of Wan2.1-1.3B at 33×240×416 (latent 16×9×30×52) compiles on an 8-device mesh.

20-step SDE rollout of 2 prompts × K=4 with CFG, LGM rewards on the full Any4D tail, and the update over 19 trained
steps; all on abstract shapes (nothing is allocated). benchmarks/grpo_aot.py prints the same figures.
"""

import os

from vggrpo_jax.backbones import load_config_file
from vggrpo_jax.parallel import make_mesh
from vggrpo_jax.grpo.aot import compile_grpo_iteration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wan21_grpo_iteration_compiles_and_fits_an_h100():
    config = load_config_file(os.path.join(ROOT, "configs", "wan21.py"))
    config.rl.prompts_per_batch = 2
    out = compile_grpo_iteration(config, make_mesh({"fsdp": -1}))
    assert out["shapes"] == {"batch": 8, "latent": [16, 9, 30, 52], "text_len": 512, "num_steps": 20,
                             "trained_steps": 19}
    for stage in ("rollout", "rewards", "update"):
        s = out[stage]
        assert s["flops"] > 0
        # Per device: 1/8 of the bf16 1.3B base (~0.33 GiB) plus the fp32 adapters, optimizer and activations.
        assert 0.1 < s["argument_gib"] < 2.0, (stage, s)
        assert s["peak_gib"] < 80.0, (stage, s)
