"""The GRPO policy loads a checkpoint converted by tools/convert_wan.py: with adapters off (the reference policy, and
the policy itself while LoRA B = 0) it computes diffusers' WanTransformer3DModel; the adapters are the only trainable
leaves and are sharded like their layers on a mesh."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from helpers.loading import load_script
from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.parallel import make_mesh
from vggrpo_jax.policy import Policy

diffusers = pytest.importorskip("diffusers")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 2e-5  # fp32, as the DiT parity tests


def _convert_tool():
    return load_script("tools/convert_wan.py")


def test_converted_checkpoint_through_policy_matches_diffusers(tmp_path):
    base = WanConfig.tiny()
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(**base.to_diffusers_config()).eval()
    with torch.no_grad():  # diffusers zero-inits some layers; make every weight count
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref.save_pretrained(tmp_path / "dit")
    assert _convert_tool().main(["--src", str(tmp_path / "dit"), "--dst", str(tmp_path / "orbax"),
                                 "--dtype", "float32"]) == 0

    cfg = base.replace(lora_rank=4, lora_alpha=8.0)
    mesh = make_mesh({"fsdp": 2, "tensor": -1})
    policy = Policy.load(cfg, str(tmp_path / "orbax"), lora_seed=0, mesh=mesh)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3, 8, 8)).astype(np.float32)
    t = np.array([999, 136], np.int32)
    text = rng.standard_normal((2, 7, cfg.text_dim)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(text), return_dict=False)[0].numpy()
    with jax.set_mesh(mesh):
        v = jax.jit(policy.velocity)(policy.lora, policy.frozen, x, t, {"emb": text})
        v_ref = jax.jit(policy.reference_velocity)(policy.lora, policy.frozen, x, t, {"emb": text})
    np.testing.assert_allclose(np.asarray(v_ref), expected, atol=ATOL)
    np.testing.assert_allclose(np.asarray(v), expected, atol=ATOL)  # LoRA B = 0: the policy is the base model

    lora_leaves = jax.tree.leaves(policy.lora)
    assert lora_leaves and all(leaf.dtype == jnp.float32 for leaf in lora_leaves)
    specs = [str(leaf.sharding.spec) for leaf in jax.tree.leaves(policy.frozen)]
    assert any("fsdp" in s for s in specs)  # the frozen base is FSDP-sharded by its logical axes
    frozen_vars = jax.tree.leaves(policy.frozen, is_leaf=lambda v: isinstance(v, LoRAParam))
    assert not any(isinstance(v, LoRAParam) for v in frozen_vars)  # the optimizer sees only the adapters
    # Perturbing the adapters changes the policy but not the reference.
    lora = jax.tree.map(lambda a: a + 0.1, policy.lora)
    with jax.set_mesh(mesh):
        v2 = jax.jit(policy.velocity)(lora, policy.frozen, x, t, {"emb": text})
        v2_ref = jax.jit(policy.reference_velocity)(lora, policy.frozen, x, t, {"emb": text})
    assert float(np.abs(np.asarray(v2) - expected).max()) > 1e-3
    np.testing.assert_allclose(np.asarray(v2_ref), expected, atol=ATOL)


def test_policy_load_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no orbax checkpoint"):
        Policy.load(WanConfig.tiny(lora_rank=2), str(tmp_path / "nothing"), lora_seed=0)
    with pytest.raises(ValueError, match="lora.rank"):
        Policy.random(WanConfig.tiny(), seed=0)
