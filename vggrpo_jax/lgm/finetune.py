"""Alignment fine-tuning of the stitched model: L_align (align.py) between Φ̂_ψ(E(x)) and the cached Φ(x).

What trains is a config choice: the connector always; the Any4D tail either stays frozen or adapts through its LoRA
adapters (the paper reportedly: rank 64, α 32 on the geometry transformer; AdamW 2e−4, cosine with warm-up, clip 1.0).
The base Any4D weights never change. Optionally the latents are perturbed by Gaussian noise of std
`latent_noise_std` during training (off by default), the robustness the paper reports for the LGM.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from vggrpo_jax.lgm.align import MODALITIES, alignment_loss
from vggrpo_jax.lgm.data import TeacherCache, batch_fn
from vggrpo_jax.lgm.loop import FitResult, fit
from vggrpo_jax.training import OptimConfig
from vggrpo_jax.lgm.model import LatentGeometryModel
from vggrpo_jax.models.lora import LoRAParam


def trainable_filter(train_lora: bool) -> Any:
    """nnx filter of what the alignment stage trains: the connector's params (+ the tail's LoRA adapters)."""
    connector = nnx.All(nnx.Param, nnx.PathContains("connector"))
    return nnx.Any(connector, LoRAParam) if train_lora else connector


@dataclasses.dataclass(frozen=True)
class AlignLoss:
    """Hashable L_align of the stitched model (equal losses share one compilation; see loop.fit)."""

    graphdef: Any
    fields: tuple[str, ...]
    weights: tuple[tuple[str, float], ...]
    latent_noise_std: float = 0.0

    def __call__(self, params, frozen, batch, rng):
        model = nnx.merge(self.graphdef, params, frozen)
        z = batch["latents"]
        if self.latent_noise_std > 0:
            z = z + self.latent_noise_std * jax.random.normal(rng, z.shape, z.dtype)
        target = {f[4:]: batch[f] for f in self.fields}
        return alignment_loss(model.outputs(z), target, dict(self.weights))


def _fields(weights: Mapping[str, float]) -> tuple[str, ...]:
    unknown = set(weights) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown alignment modalities {sorted(unknown)}; known: {sorted(MODALITIES)}")
    return tuple(f"out_{MODALITIES[m]}" for m, w in weights.items() if w)


def finetune(
    lgm: LatentGeometryModel,
    cache: TeacherCache,
    *,
    steps: int,
    batch_size: int,
    optim: OptimConfig,
    weights: Mapping[str, float],
    seed: int,
    train_lora: bool = False,
    latent_noise_std: float = 0.0,
    ckpt_dir: str | None = None,
    save_every: int = 100,
    log_every: int = 10,
    max_consecutive_skips: int = 10,
    writer: Any = None,
    progress: bool = True,
    stop_after: int | None = None,
    profile_steps: int = 0,
    workdir: str | None = None,
) -> tuple[LatentGeometryModel, FitResult]:
    """Trains the LGM by L_align on every clip of `cache`; resumable through ckpt_dir. Returns (lgm, FitResult).

    profile_steps > 0: a profiler trace of that many alignment steps in `workdir/profile` (lgm.loop.fit)."""
    if train_lora and not jax.tree.leaves(nnx.state(lgm.any4d, LoRAParam)):
        raise ValueError("align.train_lora is set but the Any4D model has no LoRA adapters (any4d.lora_rank = 0)")
    fields = _fields(weights)
    graphdef, params, frozen = nnx.split(lgm, trainable_filter(train_lora), ...)
    loss_fn = AlignLoss(graphdef, fields, tuple(sorted((k, float(v)) for k, v in weights.items())),
                        float(latent_noise_std))
    result = fit(
        name="align", params=params, frozen=frozen, loss_fn=loss_fn,
        batch_fn=batch_fn(cache, ["latents", *fields], batch_size, seed),
        optim=optim, total_steps=steps, rng=jax.random.key(seed + 1), ckpt_dir=ckpt_dir,
        save_every=save_every, log_every=log_every, writer=writer, progress=progress, stop_after=stop_after,
        max_consecutive_skips=max_consecutive_skips, profile_steps=profile_steps, workdir=workdir,
    )
    return nnx.merge(graphdef, result.params, frozen), result


@functools.partial(jax.jit, static_argnums=(0, 1))
def _heldout_loss(graphdef, weights, state, z, target):
    loss, parts = alignment_loss(nnx.merge(graphdef, state).outputs(z), target, dict(weights))
    return dict(parts, loss=loss)


def heldout_alignment(
    lgm: LatentGeometryModel, cache: TeacherCache, weights: Mapping[str, float], batch_size: int = 4
) -> dict[str, float]:
    """Mean L_align (and its per-modality parts) of the LGM over every clip of `cache` ({"loss", modality: …})."""
    fields = _fields(weights)
    graphdef, state = nnx.split(lgm)
    w = tuple(sorted((k, float(v)) for k, v in weights.items()))

    totals: dict[str, float] = {}
    n = len(cache)
    for lo in range(0, n, batch_size):
        items = [cache.get(i, ["latents", *fields]) for i in range(lo, min(n, lo + batch_size))]
        batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
        out = _heldout_loss(graphdef, w, state, batch["latents"], {f[4:]: batch[f] for f in fields})
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(items)
    return {k: v / n for k, v in totals.items()}


__all__ = ["AlignLoss", "finetune", "heldout_alignment", "trainable_filter"]
