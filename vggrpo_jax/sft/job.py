"""The flow-matching fine-tuning job for the Wan DiT (full or LoRA): toy pretraining and the paper's SFT baseline.

    python -m vggrpo_jax.finetune --config=configs/dit_toy.py --workdir=DIR      # toy T2V DiT on toy-VAE latents
    python -m vggrpo_jax.finetune --config=configs/sft_wan21.py --workdir=DIR    # SFT of Wan2.1-1.3B (LoRA)

1. Latents: the training and held-out clips are VAE-encoded once into DIR/latents (data.py).
2. Text: caption embeddings from the text-embedding cache (or the toy encoder), with caption dropout to the empty
   prompt (`finetune.caption_dropout`) so classifier-free guidance works at sampling time.
3. Model: `finetune.mode` "full" trains every DiT parameter (random init for toy pretraining, or dit.checkpoint),
   "lora" trains LoRA adapters on a frozen base (policy.py, exactly GRPO's policy). Parameters carry logical axes
   and are placed on the mesh (config.mesh) as in GRPO; the batch is split over the batch axes.
4. Loss: rectified flow on the Wan schedule and shift (flow_matching.py).
5. Loop: the training layer (orbax checkpoints with exact resume, optax factory, tensorboard, progress bar, SIGTERM).
   The batch indices, caption dropout, σ and noise of step s are functions of (seed, s): a resumed run is the
   uninterrupted one. Every `train.eval_every` steps the held-out flow-matching loss (fixed σ and noise) is logged.
6. Export (full mode): DIR/export/{model.safetensors, manifest.json} (the zoo's format; or config.export.dir), and
   for the toy text encoder DIR/export_text (or config.export.text_dir): tokenizer + encoder (data/toy_text.py).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from vggrpo_jax import backbones as build

from vggrpo_jax import parallel, training, zoo
from vggrpo_jax.models.lora import LoRAParam
from vggrpo_jax.models.wan.transformer import WanTransformer
from vggrpo_jax.policy import wan_config_from
from vggrpo_jax.sft.data import (CaptionEmbeddings, LatentSet, cached_latents, listed_clips, read_video_list,
                                 toyworld_clips)
from vggrpo_jax.sft.export import save_dit
from vggrpo_jax.sft.flow_matching import FlowMatchingConfig, flow_matching_loss, noisy_latents, sample_sigmas

MODES = ("full", "lora")


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"config.{key} = {value!r}: {why}")


def validate(c: Any) -> None:
    """One clear error naming the key, before any work."""
    if c.finetune.mode not in MODES:
        _fail("finetune.mode", c.finetune.mode, f"must be one of {MODES}")
    if c.finetune.mode == "lora" and int(c.lora.rank) < 1:
        _fail("lora.rank", c.lora.rank, "LoRA fine-tuning needs rank ≥ 1")
    if c.finetune.mode == "full" and int(c.lora.rank) != 0:
        _fail("lora.rank", c.lora.rank, "full fine-tuning trains the base weights: set lora.rank = 0")
    if not 0.0 <= float(c.finetune.caption_dropout) < 1.0:
        _fail("finetune.caption_dropout", c.finetune.caption_dropout, "must be in [0, 1)")
    if c.data.source not in ("toyworld", "videos"):
        _fail("data.source", c.data.source, "must be 'toyworld' or 'videos'")
    if c.data.source == "videos" and not c.data.videos:
        _fail("data.videos", c.data.videos, "give a .jsonl of {'video': path, 'caption': text}")
    if (int(c.data.num_frames) - 1) % 4:
        _fail("data.num_frames", c.data.num_frames, "Wan needs 1 + 4k frames")
    for k in ("num_steps", "batch_size"):
        if int(c.train[k]) < 1:
            _fail(f"train.{k}", c.train[k], "must be ≥ 1")
    if int(c.train.max_consecutive_skips) < 0:
        _fail("train.max_consecutive_skips", c.train.max_consecutive_skips, "must be ≥ 0 (0: never stop)")
    if c.finetune.mode == "full" and not c.dit.checkpoint and not c.allow_random_init:
        _fail("dit.checkpoint", c.dit.checkpoint, "full fine-tuning needs base weights (or allow_random_init=True "
              "to pretrain from scratch, toy runs)")
    FlowMatchingConfig(**dict(c.finetune.flow))
    mix = c.get("mix", {})
    if int(mix.get("samples", 0)) < 0 or int(mix.get("samples", 0)) and int(mix.get("data_clips", 0)) < 2:
        _fail("mix.samples", mix.get("samples"), "must be ≥ 0, with mix.data_clips ≥ 2 (both jitter classes)")
    if int(mix.get("samples", 0)) and (c.data.source != "toyworld" or c.finetune.mode != "full"):
        _fail("mix.samples", mix.get("samples"), "the mix report needs toyworld data and finetune.mode 'full' "
              "(jitter labels and a whole DiT); set it to 0")
    if int(mix.get("samples", 0)) and not c.vae.checkpoint:
        _fail("mix.samples", mix.get("samples"), "the mix report decodes samples with the trained VAE: set "
              "vae.checkpoint, or set mix.samples to 0")
    if int(mix.get("samples", 0)) and c.text.cache_dir and c.text.checkpoint:
        _fail("mix.samples", mix.get("samples"), "the mix report encodes held-out captions with the toy encoder; "
              "with a text-embedding cache set it to 0")


# ------------------------------------------------------------------------------------------------ data
def latent_identity(c: Any, split: str, num_clips: int) -> dict:
    """What a latent cache of `split` was made from (checked when it is read back)."""
    d = c.data
    ident = {"source": d.source, "shape": [int(d.num_frames), int(d.height), int(d.width)], "split": split,
             "num_clips": int(num_clips), "vae": {k: str(v) for k, v in dict(c.vae).items()}}
    if build.zoo_name(c.vae.checkpoint):  # a retrained zoo VAE must not reuse latents of the previous one
        ident["vae"]["sha256"] = zoo.manifest(build.zoo_name(c.vae.checkpoint))["sha256"]
    if d.source == "toyworld":
        ident["toyworld"] = d.data_config
    else:
        ident["videos"] = os.path.abspath(d.videos)
    return ident


def _vae(c: Any) -> Any:
    """The VAE that encodes the clips: its weights are required (random latents would train a DiT on noise)."""
    if not c.vae.checkpoint:
        _fail("vae.checkpoint", c.vae.checkpoint, "the latent cache needs the trained VAE's weights (the toy zoo "
              "VAE for configs/dit_toy.py)")
    return build.build_vae(c)


def _latents(c: Any, workdir: str) -> tuple[LatentSet, LatentSet]:
    d = c.data
    shape = (int(d.num_frames), int(d.height), int(d.width))
    root = os.path.join(workdir, "latents")
    vae_fn = lambda: _vae(c)  # noqa: E731 (only loaded when a cache is missing)
    if d.source == "toyworld":
        parts = {"train": int(d.num_train), "heldout": int(d.num_heldout)}
        make = {s: (lambda s=s, n=n: toyworld_clips(s, n, source=d.toyworld_source, data_dir=d.data_dir or None,
                                                      data_config=d.data_config)) for s, n in parts.items()}
    else:
        rows = read_video_list(d.videos)
        held = int(d.num_heldout)
        if not 0 < held < len(rows):
            _fail("data.num_heldout", held, f"must be in [1, {len(rows) - 1}] for {len(rows)} listed videos")
        split_rows = {"train": rows[held:], "heldout": rows[:held]}
        parts = {s: len(r) for s, r in split_rows.items()}
        make = {s: (lambda r=r: listed_clips(r, *shape)) for s, r in split_rows.items()}
    sets = [cached_latents(os.path.join(root, s), latent_identity(c, s, n), make[s], n, vae_fn, int(d.encode_batch))
            for s, n in parts.items()]
    return sets[0], sets[1]


def _captions(c: Any, workdir: str, mesh: Any, captions: list[str]) -> tuple[CaptionEmbeddings, Any]:
    """(caption embeddings, the TextEncoder when one was built here: the toy encoder is exported with the DiT)."""
    t = c.text
    if t.cache_dir and t.checkpoint:  # real runs: read the filled cache, never load the encoder
        from vggrpo_jax.data.text import open_cache  # noqa: PLC0415

        cache = open_cache(t.cache_dir, t.tokenizer, t.checkpoint, compute_dtype=build._DTYPES[t.dtype],
                           max_length=int(t.max_length))
        return CaptionEmbeddings.from_cache(cache, captions), None
    encoder = build.build_text_encoder(c, workdir, mesh, captions)
    return CaptionEmbeddings.from_encoder(encoder, captions, int(t.max_length)), encoder


# ------------------------------------------------------------------------------------------------ model
def _model(c: Any, mesh: Any, text_dim: int, channels: int) -> tuple[Any, nnx.State, nnx.State, Any]:
    """(graphdef, trainable, frozen, WanConfig), placed on the mesh by their logical axes."""
    arch = dict(c.dit.arch) if "arch" in c.dit else {}
    if c.finetune.mode == "lora":
        policy = build.build_policy(c, mesh, text_dim, channels)
        return policy.graphdef, policy.lora, policy.frozen, policy.config
    if c.dit.checkpoint:
        wcfg = wan_config_from(c, **arch)
    else:
        wcfg = wan_config_from(c, text_dim=text_dim, in_channels=channels, out_channels=channels, **arch)
    if wcfg.text_dim != text_dim or wcfg.in_channels != channels:
        raise ValueError(f"DiT expects text_dim {wcfg.text_dim} and {wcfg.in_channels} latent channels; the text "
                         f"embeddings have {text_dim} and the latents {channels}")
    abstract = nnx.eval_shape(lambda: WanTransformer(wcfg, nnx.Rngs(0)))
    graphdef, params, frozen = nnx.split(abstract, nnx.Param, ...)
    shard = parallel.abstract_state_shardings(params, mesh)
    if c.dit.checkpoint:
        params = training.restore_params(c.dit.checkpoint, params, shard)
    else:
        seed = int(c.seed) + 3
        params = jax.jit(lambda: nnx.state(WanTransformer(wcfg, nnx.Rngs(seed)), nnx.Param), out_shardings=shard)()
    return graphdef, params, frozen, wcfg


def _mix(c: Any, workdir: str, graphdef: Any, params: Any, frozen: Any, text_encoder: Any) -> dict:
    """The base model's mix of smooth and jittered samples (sft/mix.py): written to DIR/mix/, summarized here."""
    from vggrpo_jax.sft.mix import mix_report, write_report  # noqa: PLC0415

    dit = nnx.merge(graphdef, jax.device_get(params), jax.device_get(frozen))
    m = c.mix
    report, samples = mix_report(dit, text_encoder, _vae(c), num_samples=int(m.samples),
                                 num_data=int(m.data_clips), seed=int(m.seed), num_steps=int(m.num_steps),
                                 shift=float(c.finetune.flow.shift), cfg_scale=float(m.cfg_scale),
                                 data_config=c.data.data_config)
    write_report(os.path.join(workdir, "mix"), report, samples)
    logging.info("mix: jittery fraction %.3f of %d samples against %.3f of the data (threshold %.4f, accuracy %.3f "
                 "on VAE reconstructions)", report["sets"]["samples"]["jittery_fraction"], int(m.samples),
                 report["data_jittered_fraction"], report["threshold"], report["threshold_accuracy"]["recon"])
    return {k: report[k] for k in ("threshold", "threshold_accuracy", "data_jittered_fraction", "sets", "sampling",
                                   "latents")}


# ------------------------------------------------------------------------------------------------ job
def run(c: Any, workdir: str) -> dict:
    """Trains (or resumes); returns {"heldout_loss": final held-out flow-matching loss, "steps": ...}."""
    validate(c)
    os.makedirs(workdir, exist_ok=True)
    parallel.initialize_distributed(c.distributed) if "distributed" in c else None
    mesh = parallel.make_mesh(c.mesh)
    fm = FlowMatchingConfig(**dict(c.finetune.flow))
    train_set, held_set = _latents(c, workdir)
    text, text_encoder = _captions(c, workdir, mesh, train_set.captions + held_set.captions + [""])
    x_shape = tuple(train_set.latents.shape[1:])
    text_dim = int(text.batch([""]).shape[-1])
    graphdef, params, frozen, wcfg = _model(c, mesh, text_dim, x_shape[0])
    n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    logging.info("finetune (%s): %.3f M trainable parameters; %d train / %d held-out clips, latents %s",
                 c.finetune.mode, n_train / 1e6, len(train_set), len(held_set), x_shape)

    total, bsz = int(c.train.num_steps), int(c.train.batch_size)
    tx = training.make_optimizer(training.OptimConfig.from_config(c.optim), total_steps=total)
    with jax.set_mesh(mesh):
        state = {"params": params, "opt": jax.jit(tx.init)(params)}
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(c.train.keep_checkpoints))
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state)
        logging.info("resumed at step %d", start)

    seed, drop = int(c.seed), float(c.finetune.caption_dropout)
    compute = build._DTYPES[c.dit.dtype]

    def velocity(p, x, t, emb):
        return nnx.merge(graphdef, p, frozen)(x.astype(compute), t, emb.astype(compute)).astype(jnp.float32)

    def losses(p, x0, emb, key):
        k_sigma, k_noise = jax.random.split(key)
        sigma, t = sample_sigmas(k_sigma, x0.shape[0], fm)
        xt, target = noisy_latents(x0, jax.random.normal(k_noise, x0.shape, jnp.float32), sigma)
        return flow_matching_loss(velocity(p, xt, t, emb), target)

    def train_step(state, batch, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        (loss, _), grads = jax.value_and_grad(lambda p: losses(p, batch["x0"], batch["emb"], key), has_aux=True)(
            state["params"])
        params, opt, skipped = training.guarded_update(tx, grads, state["opt"], state["params"], loss)
        return {"params": params, "opt": opt}, {"loss": loss, "grad_norm": optax.global_norm(grads), "skipped": skipped}

    step_fn = jax.jit(train_step, donate_argnums=0)
    eval_fn = jax.jit(lambda p, x0, emb, key: losses(p, x0, emb, key)[1])

    def batch_at(step: int) -> dict:
        rng = np.random.default_rng([seed, int(step), 0x5F7])
        idx = np.sort(rng.integers(0, len(train_set), bsz))
        caps = [("" if rng.random() < drop else train_set.captions[i]) for i in idx]
        return parallel.shard_batch({"x0": np.asarray(train_set.latents[idx]), "emb": text.batch(caps)}, mesh)

    def heldout_loss(step: int | None = None) -> dict:
        """Mean held-out loss over the first `eval_clips` clips × `eval_repeats` fixed (σ, ε) draws."""
        n = min(int(c.train.eval_clips), len(held_set))
        vals = []
        for r in range(int(c.train.eval_repeats)):
            for lo in range(0, n, bsz):
                idx = np.arange(lo, lo + bsz) % n
                batch = parallel.shard_batch({"x0": np.asarray(held_set.latents[idx]),
                                              "emb": text.batch([held_set.captions[i] for i in idx])}, mesh)
                key = jax.random.fold_in(jax.random.key(seed + 1), r * 100003 + lo)
                with jax.set_mesh(mesh):
                    per = np.asarray(jax.device_get(eval_fn(state["params"], batch["x0"], batch["emb"], key)))
                vals.append(per[: min(bsz, n - lo)])
        return {"heldout/fm_loss": float(np.mean(np.concatenate(vals)))}

    writer = training.MetricWriter(workdir)
    loop = training.TrainLoop(
        total, start, writer=writer, samples_per_step=bsz, log_every=int(c.train.log_every),
        checkpoint=lambda s: ckpt.save(s, state), checkpoint_every=int(c.train.checkpoint_every),
        checkpoint_wait=ckpt.wait, profile_steps=int(c.train.profile_steps), workdir=workdir, desc="finetune",
        max_consecutive_skips=int(c.train.max_consecutive_skips),
        postfix=("loss",))
    if int(c.train.eval_every) > 0:
        loop.every(int(c.train.eval_every), heldout_loss)
    with loop:
        for step in loop:
            with jax.set_mesh(mesh):
                state, metrics = step_fn(state, batch_at(step), step)
            loop.step_done(step, metrics)
    ckpt.wait()
    ckpt.close()
    final = heldout_loss()
    writer.write(total, {"final/heldout_fm_loss": final["heldout/fm_loss"]})
    writer.close()
    summary = {"heldout_fm_loss": final["heldout/fm_loss"], "steps": total, "trainable_parameters": n_train}
    if int(c.get("mix", {}).get("samples", 0)):
        summary["mix"] = _mix(c, workdir, graphdef, state["params"], frozen, text_encoder)
    with open(os.path.join(workdir, "heldout.json"), "w") as f:
        json.dump(summary, f, indent=1)
    logging.info("held-out flow-matching loss after %d steps: %.5f", total, final["heldout/fm_loss"])
    if c.finetune.mode == "full":
        export = c.get("export", {})
        save_dit(export.get("dir", "") or os.path.join(workdir, "export"), jax.device_get(state["params"]), wcfg, {
            "config": json.loads(c.to_json_best_effort()), "steps": total, "heldout": summary,
            "data": {"source": c.data.source, "train": train_set.ids[:1] + train_set.ids[-1:],
                     "num_train": len(train_set), "num_heldout": len(held_set),
                     # the latents it was trained on: which VAE, and (for a zoo VAE) the sha256 of its weights
                     "vae": latent_identity(c, "train", len(train_set))["vae"]}})
        if text_encoder is not None and not c.text.checkpoint:  # the toy encoder: ship it with its DiT
            from vggrpo_jax.data.toy_text import save_text  # noqa: PLC0415

            save_text(export.get("text_dir", "") or os.path.join(workdir, "export_text"),
                      os.path.join(workdir, "toy_tokenizer"), text_encoder.encoder, int(c.text.max_length),
                      text_encoder.fingerprint, {"config": json.loads(c.to_json_best_effort())})
    return {"state": state, "graphdef": graphdef, "frozen": frozen, **summary}


__all__ = ["MODES", "latent_identity", "run", "validate"]
