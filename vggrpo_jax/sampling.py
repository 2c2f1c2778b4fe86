"""The sampling job: videos of a prompt file from a GRPO run's adapters (or the base model), optionally LGM-guided.

    python -m vggrpo_jax.sample --config=configs/toy.py --workdir=DIR --checkpoint=latest|base|N \
        --prompts=FILE --out=OUT --seed=S [--num_steps=N] [--batch_size=B] [--config.guidance.scale=…]

Writes OUT/000000.mp4, OUT/000001.mp4, … (one per prompt, in file order) and OUT/samples.jsonl, one line per video:
{index, prompt, seed, checkpoint, step, num_steps, guidance, video, lgm: {motion, geo, e_trans, e_rot}}.

- checkpoint: "latest" (the newest step in DIR/checkpoints), N (that step), or "base" (adapters zeroed: the base
  model, no checkpoint needed). A GRPO checkpoint contributes its EMA adapters, as evaluation does.
- Noise: video i starts from normal(fold_in(key(seed), i)), so a video does not depend on the batching or on the
  other prompts, and the same (seed, index) gives the same start under every checkpoint and guidance scale.
- Guidance: config.guidance (see vggrpo_jax/guidance.py); scale 0 is plain ODE sampling.
- Components come from the config as in training (the toy config builds or reuses DIR/lgm and DIR/toy_tokenizer), so
  a run's own workdir samples with the LGM, tokenizer and text encoder it was trained with.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax import backbones as build
from vggrpo_jax import parallel, training
from vggrpo_jax.config import validate
from vggrpo_jax.data.prompts import read_prompts
from vggrpo_jax.grpo.run import build_geometry
from vggrpo_jax.grpo.trainer import GRPOTrainer, latent_shape
from vggrpo_jax.guidance import GuidedSampler, guidance_spec


def parse_checkpoint(spec: str | int) -> str | int:
    """'latest' | 'base' | a step number ≥ 0 → 'latest' | 'base' | int; anything else raises naming --checkpoint."""
    s = str(spec).strip()
    if s in ("latest", "base"):
        return s
    if s.isdigit():
        return int(s)
    raise ValueError(f"--checkpoint={spec!r}: give 'latest', 'base' or a step number")


def checkpoint_step(workdir: str, checkpoint: str | int) -> int:
    """The step of DIR/checkpoints that 'latest' or N names; raises FileNotFoundError listing the steps there."""
    directory = os.path.join(workdir, "checkpoints")
    steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []
    if not steps:
        raise FileNotFoundError(f"--checkpoint={checkpoint}: no checkpoint in {directory} (--checkpoint=base samples "
                                "the base model)")
    step = steps[-1] if checkpoint == "latest" else int(checkpoint)
    if step not in steps:
        raise FileNotFoundError(f"--checkpoint={checkpoint}: {directory} holds steps {steps}")
    return step


@functools.partial(jax.jit, static_argnums=2)
def _noise_rows(seed: jax.Array, indices: jax.Array, latent: tuple[int, ...]) -> jax.Array:
    key = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), latent, jnp.float32))(indices)


def initial_noise(seed: int, indices: Sequence[int], latent: Sequence[int]) -> np.ndarray:
    """(len(indices), *latent) float32: video i's start normal(fold_in(key(seed), i)) (independent of batching).
    Compiled once per (batch size, latent shape): a sweep calls it for every batch."""
    rows = jnp.asarray(list(indices), jnp.int32)
    return np.asarray(_noise_rows(jnp.asarray(int(seed), jnp.uint32), rows, tuple(int(d) for d in latent)))


class SamplingJob:
    """Components of a GRPO config for sampling: mesh, text encoder, policy, VAE, LGM, sampler."""

    def __init__(self, config: Any, workdir: str, num_steps: int, corpus: Sequence[str]):
        self.config, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)  # toy runs keep their tokenizer (and LGM) there
        parallel.initialize_distributed(config.distributed)
        self.mesh = parallel.make_mesh(config.mesh)
        c = config
        self.text = build.build_text_encoder(c, workdir, self.mesh, list(corpus))
        self.max_length = int(c.text.max_length)
        self.uncond = self.text.negative_embedding()[None]  # (1, L, D)
        self.vae, self.any4d, self.lgm = build_geometry(c, workdir)
        self.latent = latent_shape(c, self.vae.config, int(self.vae.config.z_dim))
        self.policy = build.build_policy(c, self.mesh, int(self.uncond.shape[-1]), self.latent[0])
        lgm_graphdef, lgm_state = nnx.split(self.lgm)
        lgm_state = parallel.place_state(lgm_state, self.mesh)
        self.trainer = GRPOTrainer(c, self.policy, lgm_graphdef, lgm_state, self.latent, self.mesh)
        self.sampler = GuidedSampler(c, self.policy, lgm_graphdef, lgm_state, num_steps, self.mesh)
        vae_graphdef, vae_state = nnx.split(self.vae)
        self._vae_state = parallel.place_state(vae_state, self.mesh)
        self._decode = jax.jit(lambda s, z: nnx.merge(vae_graphdef, s).decode(
            nnx.merge(vae_graphdef, s).denormalize_latents(z)))

    def batch_shards(self) -> int:
        spec = parallel.batch_sharding(self.mesh, 1).spec[0]
        axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
        return int(np.prod([self.mesh.shape[a] for a in axes]))

    def adapters(self, checkpoint: str | int) -> tuple[Any, int | None]:
        """(LoRA pytree, step): the EMA adapters of a checkpoint, or zeros for 'base' (step None)."""
        if checkpoint == "base":
            return jax.tree.map(jnp.zeros_like, self.policy.lora), None
        directory = os.path.join(self.workdir, "checkpoints")
        ckpt = training.Checkpointer(directory, keep=1000)
        try:
            step = checkpoint_step(self.workdir, checkpoint)
            _, state, _ = ckpt.restore(self.trainer.init_state(), step=step)
        finally:
            ckpt.close()
        return state.ema_params, int(step)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        return build.pad_batch(self.text.encode_trimmed(list(prompts)), self.max_length)

    def decode(self, z0: jax.Array) -> np.ndarray:
        with parallel_mesh(self.mesh):
            return np.asarray(jax.device_get(self._decode(self._vae_state, z0)))


def parallel_mesh(mesh: Any):
    return parallel.mesh_context(mesh)


def sample(config: Any, workdir: str, checkpoint: str | int, prompts_path: str, out: str, seed: int,
           num_steps: int | None = None, batch_size: int = 0) -> list[dict]:
    """Runs the sampling job (module doc); returns the samples.jsonl records."""
    # Every user mistake is found before any model is built.
    config = validate(config)
    checkpoint = parse_checkpoint(checkpoint)
    num_steps = int(config.eval.num_steps if num_steps is None else num_steps)
    if num_steps < 1:
        raise ValueError(f"--num_steps={num_steps}: must be ≥ 1")
    spec = guidance_spec(config, num_steps)
    prompts = [p.text for p in read_prompts(prompts_path)]
    if batch_size < 0:
        raise ValueError(f"--batch_size={batch_size}: must be ≥ 0 (0: one video per batch shard)")
    if checkpoint != "base":
        checkpoint_step(workdir, checkpoint)

    job = SamplingJob(config, workdir, num_steps, prompts)
    lora, step = job.adapters(checkpoint)
    shards = job.batch_shards()
    batch = batch_size or shards
    if batch % shards:
        raise ValueError(f"--batch_size={batch} does not split over the {shards} batch shards of mesh "
                         f"{dict(job.mesh.shape)}")
    uncond = parallel.replicate(jnp.asarray(job.uncond), job.mesh)
    os.makedirs(out, exist_ok=True)
    records: list[dict] = []
    guidance = {"scale": spec.scale, "steps": list(spec.options.steps) if spec.scale else [],
                "schedule": spec.options.schedule, "clip": spec.options.clip,
                "through_model": spec.options.through_model, "weights": dict(spec.weights)}
    for start in range(0, len(prompts), batch):
        idx = list(range(start, min(start + batch, len(prompts))))
        rows = idx + [idx[-1]] * (batch - len(idx))  # pad the last batch (padded rows are dropped)
        cond = parallel.shard_batch(job.encode([prompts[i] for i in rows]), job.mesh)
        x_init = parallel.shard_batch(initial_noise(seed, rows, job.latent), job.mesh)
        z0, trace = job.sampler.sample(lora, cond, uncond, x_init)
        rewards = job.trainer.latent_rewards(z0)
        video = job.decode(z0)
        skipped = np.asarray(jax.device_get(trace.skipped)).sum(axis=0)
        for j, i in enumerate(idx):
            name = f"{i:06d}.mp4"
            if jax.process_index() == 0:
                from vggrpo_jax.data.video import write_video  # noqa: PLC0415

                write_video(os.path.join(out, name), video[j], fps=int(config.video.fps))
            records.append({
                "index": i, "prompt": prompts[i], "seed": int(seed),
                "checkpoint": checkpoint if isinstance(checkpoint, str) else int(checkpoint), "step": step,
                "num_steps": num_steps, "guidance": guidance, "video": name,
                "lgm": {k: float(rewards[k][j]) for k in ("motion", "geo", "e_trans", "e_rot")},
                "guidance_skipped_steps": int(skipped[j])
            })
    if jax.process_index() == 0:
        tmp = os.path.join(out, "samples.jsonl.tmp")
        with open(tmp, "w") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")
        os.replace(tmp, os.path.join(out, "samples.jsonl"))
    return records
