"""The LGM-guided sampler compiles on the 8-device mesh with the shardings of sampling (toy sizes, abstract shapes).

benchmarks/guidance_aot.py compiles the same programs for Wan2.1-1.3B at 33×240×416 and prints the memory per device.
"""

import os

import jax

from vggrpo_jax.backbones import load_config_file
from vggrpo_jax.guidance_aot import (BATCH_AXES, abstract_components, abstract_inputs, compile_guided_sampling,
                                     guided_samplers)
from vggrpo_jax.parallel import logical_sharding, make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy():
    config = load_config_file(os.path.join(ROOT, "configs", "toy_random.py"))
    config.text.max_length = 16
    return config


def test_guided_sampler_lowers_with_the_sampling_shardings():
    config = _toy()
    mesh = make_mesh({"fsdp": -1})
    policy, lgm_graphdef, lgm_state, shape = abstract_components(config, mesh, stitch_layer=2, text_dim=32,
                                                                 latent_channels=16)
    cond, uncond, x_init = abstract_inputs(config, mesh, 8, shape, 32)
    sampler = guided_samplers(config, mesh, 3, policy, lgm_graphdef, lgm_state)["guided_through_model"]
    compiled = sampler.lower(policy.lora, cond, uncond, x_init, 1.0).compile()
    args, _ = compiled.input_shardings
    lora_s, frozen_s, lgm_s, cond_s, _, x_s, _ = args
    # The frozen DiT, its adapters and the LGM stay where their logical axes put them (FSDP over 8 devices). Inputs
    # the program does not read (the Any4D encoder and the blocks before the stitch layer) are pruned: None.
    for got, arrays in ((frozen_s, policy.frozen), (lora_s, policy.lora), (lgm_s, lgm_state)):
        same = jax.tree.map(lambda g, a: g is None or g.is_equivalent_to(a.sharding, a.ndim), got, arrays,
                            is_leaf=lambda x: x is None)
        assert all(jax.tree.leaves(same)) and len(jax.tree.leaves(got)) > 0
    assert any(not s.is_fully_replicated for s in jax.tree.leaves(frozen_s))
    # Text, noise and samples split over the batch axes, one sample per device.
    batch = logical_sharding(BATCH_AXES, mesh, shape=x_init.shape)
    assert x_s.is_equivalent_to(batch, 5) and not batch.is_fully_replicated
    assert cond_s.is_equivalent_to(cond.sharding, 3)
    z0_s = compiled.output_shardings[0]
    assert z0_s.is_equivalent_to(batch, 5)
    assert compiled.memory_analysis().temp_size_in_bytes > 0


def test_compile_guided_sampling_reports_all_three_programs():
    config = _toy()
    config.dit.preset = "tiny"
    out = compile_guided_sampling(config, make_mesh({"fsdp": -1}), batch=8, num_steps=2, stitch_layer=2)
    assert set(out) == {"unguided", "guided_through_model", "guided_lgm_only", "shapes"}
    for name in ("unguided", "guided_through_model", "guided_lgm_only"):
        assert out[name]["flops"] > 0 and out[name]["peak_gib"] > 0
    # The backward through LGM and DiT needs more temporaries than the forward-only sampler.
    assert out["guided_through_model"]["temp_gib"] > out["unguided"]["temp_gib"]
