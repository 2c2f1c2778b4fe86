"""The DPO job core: pairs from the resumable pair job → LoRA DPO updates on a tiny Wan policy, resumed exactly."""

import zlib

import jax
import numpy as np
import pytest

from vggrpo_jax import training
from vggrpo_jax.dpo.pairs import generate_groups, write_pairs
from vggrpo_jax.dpo.train import DPOJobConfig, PairData, run_dpo, step_indices
from vggrpo_jax.evaluation.preference import EPIPOLAR_DPO
from vggrpo_jax.models.wan.config import WanConfig
from vggrpo_jax.policy import Policy
from vggrpo_jax.rl.schedule import wan_sigmas


def test_step_indices_visit_every_pair_once_per_epoch():
    idx = np.concatenate([step_indices(10, 4, s, seed=3) for s in range(1, 6)])  # 20 positions = 2 epochs
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:]) == list(range(10))
    assert list(step_indices(10, 4, 2, seed=3)) == list(idx[4:8])  # a function of (seed, step) alone
    assert list(idx[:10]) != list(idx[10:])  # reshuffled each epoch


def _embed(prompts):
    return np.stack([np.random.default_rng(zlib.crc32(p.encode())).normal(size=(5, 16)) for p in prompts])


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pairs"))
    sample = lambda g, p, seeds: np.stack([np.random.default_rng(s).normal(size=(4, 3, 8, 8)) for s in seeds])  # noqa: E731
    score = lambda lat: {"epi_sampson": np.abs(lat).mean(axis=(1, 2, 3, 4))}  # noqa: E731
    generate_groups(out, [f"prompt {i}" for i in range(5)], ["static"] * 5, 3, sample, score, log=lambda s: None)
    write_pairs(out, "epi_sampson", EPIPOLAR_DPO, name="epi")
    return out


def _run(workdir, steps, pairs_dir):
    policy = Policy.random(WanConfig.tiny(lora_rank=4, lora_alpha=8.0), seed=0)
    cfg = DPOJobConfig(steps=steps, batch_size=2, beta=500.0, seed=1, checkpoint_every=2, log_every=1)
    return run_dpo(policy, PairData(pairs_dir, "epi"), _embed, wan_sigmas(10),
                   training.OptimConfig(name="adam", lr=3e-3), cfg, workdir, progress=False)


def test_run_dpo_resumes_exactly_and_logs_the_dpo_metrics(tmp_path, pairs_dir):
    data = PairData(pairs_dir, "epi")
    assert len(data) == 5 and data.batch([0, 1])["x0_w"].shape == (2, 4, 3, 8, 8)
    straight = _run(str(tmp_path / "a"), 4, pairs_dir)
    _run(str(tmp_path / "b"), 2, pairs_dir)  # stopped after 2 steps (checkpointed at 2) …
    resumed = _run(str(tmp_path / "b"), 4, pairs_dir)  # … and restarted to 4
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
    init = Policy.random(WanConfig.tiny(lora_rank=4, lora_alpha=8.0), seed=0).lora
    moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(init)))
    assert moved > 1e-3  # the adapters trained
    rows = training.read_metrics(str(tmp_path / "a"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "implicit_accuracy", "reward_margin", "grad_norm"} <= set(rows[-1])
    with pytest.raises(FileNotFoundError, match="pairs_nope.jsonl"):
        PairData(pairs_dir, "nope")
