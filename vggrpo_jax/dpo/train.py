"""The DPO training job core on the training layer: LoRA adapters of a policy fitted to ranked preference pairs.

Reads `pairs_{name}.jsonl` and the group latents written by `dpo.pairs` (Epipolar-DPO: pairs ranked by Epi.;
VideoGPA: by the RGB geometry model's reprojection error), and runs `rl.dpo.make_dpo_step` with the training
layer's optimizer, checkpointer, metric writer and loop. Resumable exactly: the batch of step s is a function of
(seed, s) (a fresh permutation of the pairs each epoch) and so is its noise/σ key, so nothing but the adapters and
the optimizer state needs saving.

Component building (policy from a checkpoint, text embeddings) is the entry point's business; this module takes a
`Policy` and an `embed(prompts) → (B, L, D)` function.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax import training
from vggrpo_jax.rl.dpo import make_dpo_step


class PairData:
    """The pairs of one ranking: `batch(indices)` → {"x0_w", "x0_l": (B, C, F, H, W) float32, "prompts": [B]}."""

    def __init__(self, pairs_dir: str, name: str):
        path = os.path.join(pairs_dir, f"pairs_{name}.jsonl")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: run dpo.pairs.write_pairs(…, name={name!r}) first")
        with open(path) as fh:
            self.pairs = [json.loads(line) for line in fh if line.strip()]
        if not self.pairs:
            raise ValueError(f"{path} holds no pairs (every group was dropped by the PairRule)")
        self.dir = pairs_dir
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _latents(self, rel: str) -> np.ndarray:
        if rel not in self._cache:
            self._cache[rel] = np.load(os.path.join(self.dir, rel), mmap_mode="r")
        return self._cache[rel]

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        ps = [self.pairs[int(i)] for i in indices]
        return {
            "x0_w": np.stack([np.asarray(self._latents(p["latents"])[p["winner"]], np.float32) for p in ps]),
            "x0_l": np.stack([np.asarray(self._latents(p["latents"])[p["loser"]], np.float32) for p in ps]),
            "prompts": [p["prompt"] for p in ps],
        }


def step_indices(num_pairs: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The pair indices of training step `step` (1-based): consecutive slices of a per-epoch permutation drawn from
    (seed, epoch), wrapping into the next epoch — a function of (seed, step) alone."""
    start = (step - 1) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, k = divmod(pos, num_pairs)
        perm = np.random.default_rng([int(seed), int(epoch)]).permutation(num_pairs)
        out.append(int(perm[k]))
    return np.asarray(out)


@dataclasses.dataclass(frozen=True)
class DPOJobConfig:
    steps: int
    batch_size: int
    beta: float = 500.0  # Epipolar-DPO's default (rl/dpo.py documents the scaling)
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 3

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.beta > 0:
            raise ValueError(f"DPOJobConfig needs steps ≥ 1, batch_size ≥ 1 and beta > 0, got {self}")


def run_dpo(policy: Any, data: PairData, embed: Callable[[list[str]], np.ndarray], sigmas: Any,
            optim: training.OptimConfig, cfg: DPOJobConfig, workdir: str, *, progress: bool = True) -> Any:
    """Trains `policy.lora` on `data` for cfg.steps (resuming from workdir/checkpoints); returns the final adapters.

    embed(prompts) → (B, L, D) text embeddings (zero-padded UMT5, the policy's conditioning). The reference model is
    the same network with adapters off (`policy.reference_velocity`), as in Diffusion-DPO's frozen reference.
    """
    tx = training.make_optimizer(optim, total_steps=cfg.steps)
    state = {"lora": policy.lora, "opt": tx.init(policy.lora)}
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state)
    step_fn = jax.jit(make_dpo_step(policy.velocity, policy.reference_velocity, tx, beta=cfg.beta, sigmas=sigmas),
                      donate_argnums=(0, 1))
    writer = training.MetricWriter(workdir)
    loop = training.TrainLoop(cfg.steps, start, writer=writer, samples_per_step=cfg.batch_size,
                              log_every=cfg.log_every, checkpoint=lambda s: ckpt.save(s, state),
                              checkpoint_every=cfg.checkpoint_every, checkpoint_wait=ckpt.wait, workdir=workdir,
                              desc="dpo", postfix=("loss", "implicit_accuracy"), progress=progress)
    root = jax.random.key(cfg.seed)
    try:
        with loop:
            for step in loop:
                b = data.batch(step_indices(len(data), cfg.batch_size, step, cfg.seed))
                batch = {"x0_w": jnp.asarray(b["x0_w"]), "x0_l": jnp.asarray(b["x0_l"]),
                         "text": {"emb": jnp.asarray(embed(b["prompts"]), jnp.float32)}}
                lora, opt, metrics = step_fn(state["lora"], state["opt"], policy.frozen, batch,
                                             jax.random.fold_in(root, step))
                state = {"lora": lora, "opt": opt}
                loop.step_done(step, metrics)
    finally:
        ckpt.close()
        writer.close()
    return state["lora"]


__all__ = ["DPOJobConfig", "PairData", "run_dpo", "step_indices"]
