"""The toy VAE job: train a Wan2.1-architecture VAE on toyworld crops, evaluate on full held-out clips, export.

    python -m vggrpo_jax.train_vae --config=configs/vae_toy.py --workdir=DIR

Workdir:
    data/{train,heldout}_videos.npz   the videos, read once from the toyworld tfds dataset
    checkpoints/                      orbax steps: params + Adam state (the batches are a function of (seed, step))
    metrics.jsonl, tb/                training losses, held-out PSNR/SSIM, perf (the training layer's writer)
    summary.json                      final held-out metrics, latent statistics, throughput
    export/ (or config.export.dir)    model.safetensors + manifest.json (toy_vae.export; zoo.load("vae") reads it)

Loss per crop: l1·|x̂ − x| + mse·(x̂ − x)² + grad·|∇x̂ − ∇x| (spatial finite differences: keeps edges sharp, the
usual failure of a small autoencoder trained on pixel losses alone) + kl·KL(q(z|x) ‖ N(0, I)), each a mean over
elements; x̂ decodes a reparameterized sample z. Evaluation decodes the latent means of full clips (zoo.VIDEO).
After training, latents_mean/std are set to the per-channel mean/std of the trained encoder's latent means over
`eval.stats_clips` training clips, and the model is exported with them.

Resume: rerunning the command on the same workdir restores the newest checkpoint and continues with the next step;
all randomness is a function of (seed, step), so an interrupted run ends with the same parameters as an
uninterrupted one. A finished run only re-evaluates and re-exports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict

from vggrpo_jax import training
from vggrpo_jax.data import toyworld_tfds
from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig
from vggrpo_jax.toy_vae import export
from vggrpo_jax.toy_vae.data import CropSampler, load_videos
from vggrpo_jax.toy_vae.metrics import psnr, ssim

_KEYS = {
    "seed": None,
    "model": {"base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample",
              "is_residual", "patch_size"},
    "data": {"data_dir", "config", "num_train", "crop_frames", "crop_size", "flip", "colour_prob"},
    "loss": {"l1", "mse", "grad", "kl"},
    "optim": None,  # checked by training.OptimConfig.from_config
    "train": {"steps", "batch_size", "log_every", "checkpoint_every", "profile_steps", "max_consecutive_skips"},
    "eval": {"every", "num_clips", "final_num_clips", "batch_size", "stats_clips"},
    "export": {"dir"},
}


def validate(c: ConfigDict) -> None:
    """One error naming every unknown or missing key, and bad values, before any work."""
    problems = [f"unknown key {k!r}" for k in c if k not in _KEYS]
    for k, sub in _KEYS.items():
        if k not in c:
            problems.append(f"missing key {k!r}")
        elif sub is not None:
            problems += [f"unknown key '{k}.{s}'" for s in c[k] if s not in sub]
            problems += [f"missing key '{k}.{s}'" for s in sub if s not in c[k]]
    if problems:
        raise ValueError("configs/vae_toy.py: " + "; ".join(problems))
    training.OptimConfig.from_config(c.optim, where="optim")
    e, t = c.eval, c.train
    if t.steps < 1 or t.batch_size < 1:
        raise ValueError(f"train.steps and train.batch_size must be >= 1, got {t.steps}, {t.batch_size}")
    if int(t.max_consecutive_skips) < 0:
        raise ValueError(f"train.max_consecutive_skips must be >= 0 (0: never stop), got {t.max_consecutive_skips}")
    for name in ("num_clips", "final_num_clips"):
        if e[name] < 1 or e[name] % e.batch_size:
            raise ValueError(f"eval.{name}={e[name]} must be a positive multiple of eval.batch_size={e.batch_size}")
    if e.stats_clips < 1 or e.stats_clips % e.batch_size:
        raise ValueError(f"eval.stats_clips={e.stats_clips} must be a positive multiple of eval.batch_size")
    if e.stats_clips > c.data.num_train:
        raise ValueError(f"eval.stats_clips={e.stats_clips} exceeds data.num_train={c.data.num_train}")
    if min(c.loss.values()) < 0:
        raise ValueError(f"loss weights must be >= 0, got {dict(c.loss)}")
    try:  # widths, strides and patchify checked by building the model abstractly (no parameters allocated)
        cfg = model_config(c)
        nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    except ValueError as err:
        raise ValueError(f"configs/vae_toy.py model: {err}") from None
    if c.data.crop_size % cfg.spatial_stride:
        raise ValueError(f"data.crop_size={c.data.crop_size} must be a multiple of the VAE's spatial stride "
                         f"{cfg.spatial_stride}")


def model_config(c: ConfigDict) -> WanVAEConfig:
    m = c.model
    z = int(m.z_dim)
    dec = int(m.decoder_base_dim) if m.decoder_base_dim else None  # 0 / None: the encoder's base_dim (Wan2.1)
    p = int(m.patch_size) if m.patch_size else None  # 0 / None: no 2×2 patchify (Wan2.1); 2: Wan2.2
    channels = 3 * (p or 1) ** 2
    return WanVAEConfig(base_dim=int(m.base_dim), decoder_base_dim=dec, z_dim=z, dim_mult=tuple(m.dim_mult),
                        num_res_blocks=int(m.num_res_blocks), temperal_downsample=tuple(m.temperal_downsample),
                        is_residual=bool(m.is_residual), patch_size=p, in_channels=channels, out_channels=channels,
                        scale_factor_spatial=2 ** (len(m.dim_mult) - 1) * (p or 1),
                        latents_mean=(0.0,) * z, latents_std=(1.0,) * z)


def _spatial_grad(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def make_loss(graphdef: nnx.GraphDef, weights: ConfigDict):
    w = {k: float(v) for k, v in weights.items()}

    def loss_fn(params: nnx.State, video: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        vae = nnx.merge(graphdef, params)
        mean, logvar = vae.encode(video)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        rec = vae.decode(z, clip=False)
        err = rec - video
        l1, mse = jnp.mean(jnp.abs(err)), jnp.mean(err**2)
        (gy, gx), (ty, tx) = _spatial_grad(rec), _spatial_grad(video)
        grad = 0.5 * (jnp.mean(jnp.abs(gy - ty)) + jnp.mean(jnp.abs(gx - tx)))
        kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
        loss = w["l1"] * l1 + w["mse"] * mse + w["grad"] * grad + w["kl"] * kl
        clipped = jnp.mean((jnp.clip(rec, -1, 1) - video) ** 2)
        return loss, {"loss": loss, "l1": l1, "mse": mse, "grad": grad, "kl": kl,
                      "train_psnr": 10 * jnp.log10(4.0 / clipped)}

    return loss_fn


def make_train_step(graphdef, tx, weights: ConfigDict, seed: int):
    loss_fn = make_loss(graphdef, weights)

    def step_fn(state: dict, video: jax.Array, step: jax.Array) -> tuple[dict, dict]:
        key = jax.random.fold_in(jax.random.key(seed), step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], video, key)
        params, opt, metrics["skipped"] = training.guarded_update(tx, grads, state["opt"], state["params"], loss)
        metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
        return {"params": params, "opt": opt}, metrics

    return jax.jit(step_fn, donate_argnums=0)


def make_eval_fn(graphdef):
    """(params, video (B, C, F, H, W)) → per-clip PSNR, SSIM and the latent means, decoding the means."""

    @jax.jit
    def eval_fn(params, video):
        vae = nnx.merge(graphdef, params)
        mean, _ = vae.encode(video)
        rec = vae.decode(mean)
        return psnr(rec, video), ssim(rec, video), mean, rec

    return eval_fn


def evaluate(eval_fn, params, videos: np.ndarray, batch_size: int, objects: np.ndarray | None = None) -> dict[str, Any]:
    """Held-out PSNR / SSIM over uint8 clips (N, F, H, W, 3), full clips; returns means and per-clip values.

    With ``objects`` (N, F, H, W) bool also ``psnr_objects``: the PSNR of all object pixels pooled (the hard part).
    """
    ps, ss, obj_se, obj_n = [], [], 0.0, 0
    for i in range(0, len(videos), batch_size):
        x = toyworld_tfds.video_to_model(videos[i : i + batch_size])
        p, s, _, rec = eval_fn(params, jnp.asarray(x))
        ps.append(np.asarray(p))
        ss.append(np.asarray(s))
        if objects is not None:
            m = objects[i : i + batch_size][:, None]  # (B, 1, F, H, W) against (B, 3, F, H, W)
            obj_se += float(np.sum(((np.asarray(rec, np.float64) - x) ** 2) * m))
            obj_n += 3 * int(m.sum())
    ps, ss = np.concatenate(ps), np.concatenate(ss)
    out = {"psnr": float(ps.mean()), "ssim": float(ss.mean()), "psnr_min": float(ps.min()), "num_clips": len(ps),
           "psnr_per_clip": ps.tolist()}
    if obj_n:
        out["psnr_objects"] = float(10 * np.log10(4.0 / max(obj_se / obj_n, 1e-12)))
    return out


def latent_stats(eval_fn, params, videos: np.ndarray, batch_size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the encoder's latent means over full clips (what latents_mean/std hold)."""
    lat = []
    for i in range(0, len(videos), batch_size):
        _, _, m, _ = eval_fn(params, jnp.asarray(toyworld_tfds.video_to_model(videos[i : i + batch_size])))
        lat.append(np.moveaxis(np.asarray(m, np.float64), 1, -1).reshape(-1, m.shape[1]))
    lat = np.concatenate(lat)
    return lat.mean(0).astype(np.float32).tolist(), lat.std(0).astype(np.float32).tolist()


def run(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes), evaluates and exports; returns the summary (also written to workdir/summary.json)."""
    c = config
    validate(c)
    os.makedirs(workdir, exist_ok=True)
    if not jax.config.jax_compilation_cache_dir:
        # The train step takes minutes to compile on a small CPU; a resumed run loads it from here.
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
    steps, batch = int(c.train.steps), int(c.train.batch_size)
    data_dir = c.data.data_dir or toyworld_tfds.DEFAULT_DATA_DIR
    num_eval = max(int(c.eval.num_clips), int(c.eval.final_num_clips))
    train_videos, train_seeds, _ = load_videos("train", data_dir, c.data.config, int(c.data.num_train),
                                            cache=os.path.join(workdir, "data", "train_videos.npz"))
    held_videos, held_seeds, held_objects = load_videos("heldout", data_dir, c.data.config, num_eval,
                                          cache=os.path.join(workdir, "data", "heldout_videos.npz"))
    sampler = CropSampler(train_videos, batch, int(c.data.crop_frames), int(c.data.crop_size), int(c.seed),
                          bool(c.data.flip), float(c.data.colour_prob))

    cfg = model_config(c)
    vae = WanVAE(cfg, rngs=nnx.Rngs(int(c.seed)))
    graphdef, params, rest = nnx.split(vae, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise RuntimeError("WanVAE has non-parameter state; the toy VAE job trains parameters only")
    del rest
    tx = training.make_optimizer(training.OptimConfig.from_config(c.optim, where="optim"), total_steps=steps)
    state = {"params": params, "opt": tx.init(params)}
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=2)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state)
        logging.info("toy VAE: resumed at step %d of %d", start, steps)
    train_step = make_train_step(graphdef, tx, c.loss, int(c.seed))
    eval_fn = make_eval_fn(graphdef)
    writer = training.MetricWriter(workdir)
    step_seconds: list[float] = []

    def eval_action(step: int) -> dict[str, float]:
        n = int(c.eval.num_clips)
        r = evaluate(eval_fn, state["params"], held_videos[:n], int(c.eval.batch_size), held_objects[:n])
        return {"heldout/psnr": r["psnr"], "heldout/ssim": r["ssim"], "heldout/psnr_min": r["psnr_min"],
                "heldout/psnr_objects": r.get("psnr_objects", float("nan"))}

    loop = training.TrainLoop(
        steps, start, writer=writer, samples_per_step=batch, log_every=int(c.train.log_every),
        checkpoint=lambda s: ckpt.save(s, state), checkpoint_every=int(c.train.checkpoint_every),
        checkpoint_wait=ckpt.wait, profile_steps=int(c.train.profile_steps), workdir=workdir, desc="vae",
        max_consecutive_skips=int(c.train.max_consecutive_skips),
        postfix=("loss", "train_psnr"),
    )  # fmt: skip
    if int(c.eval.every) > 0:
        loop.every(int(c.eval.every), eval_action, at_end=False)
    try:
        with loop:
            for step in loop:
                state, metrics = train_step(state, jnp.asarray(sampler(step)), jnp.int32(step))
                out = loop.step_done(step, metrics)
                if step > start + 1 and "perf/step_seconds" in out:  # the first step of a run compiles
                    step_seconds.append(float(out["perf/step_seconds"]))
        ckpt.wait()

        t0 = time.perf_counter()
        n = int(c.eval.final_num_clips)
        final = evaluate(eval_fn, state["params"], held_videos[:n], int(c.eval.batch_size), held_objects[:n])
        eval_s = time.perf_counter() - t0
        mean, std = latent_stats(eval_fn, state["params"], train_videos[: int(c.eval.stats_clips)],
                                 int(c.eval.batch_size))
        writer.write(steps, {"final/heldout_psnr": final["psnr"], "final/heldout_ssim": final["ssim"],
                             "final/heldout_psnr_objects": final.get("psnr_objects", float("nan"))})
        _write_samples(writer, steps, eval_fn, state["params"], held_videos[: int(c.eval.batch_size)])
    finally:
        ckpt.close()
        writer.close()

    shipped = dataclasses.replace(cfg, latents_mean=tuple(mean), latents_std=tuple(std))
    out_model = WanVAE(shipped, rngs=nnx.Rngs(0))
    nnx.update(out_model, state["params"])
    crops_per_s = batch / float(np.median(step_seconds)) if step_seconds else None
    info = {
        "config": c.to_dict(),
        "steps": steps,
        "data": {"dataset": f"toyworld/{c.data.config}", "version": str(toyworld_tfds.Toyworld.VERSION),
                 "train_seeds": [int(train_seeds[0]), int(train_seeds[-1]) + 1],
                 "heldout_seeds": [int(held_seeds[0]), int(held_seeds[-1]) + 1], "video": list(held_videos.shape[1:4])},
        "heldout": {k: final[k] for k in ("psnr", "ssim", "psnr_min", "psnr_objects", "num_clips") if k in final},
        "throughput": {"train_crops_per_second": crops_per_s, "crop": [int(c.data.crop_frames), int(c.data.crop_size),
                       int(c.data.crop_size)], "eval_clips_per_second": final["num_clips"] / eval_s},
    }  # fmt: skip
    export_dir = c.export.dir or os.path.join(workdir, "export")
    manifest = export.save_model(export_dir, out_model, info)
    summary = {**info, "export_dir": export_dir, "sha256": manifest["sha256"], "bytes": manifest["bytes"],
               "latents_mean": mean, "latents_std": std, "psnr_per_clip": final["psnr_per_clip"]}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    logging.info("toy VAE: held-out PSNR %.2f dB, SSIM %.4f over %d clips; exported to %s", final["psnr"],
                 final["ssim"], final["num_clips"], export_dir)
    return summary


def _write_samples(writer, step: int, eval_fn, params, videos: np.ndarray) -> None:
    """Tensorboard image: first, middle and last frame of a few held-out clips, originals above reconstructions."""
    x = jnp.asarray(toyworld_tfds.video_to_model(videos))
    _, _, _, rec = eval_fn(params, x)
    frames = [0, videos.shape[1] // 2, videos.shape[1] - 1]
    to_img = lambda v: np.concatenate([np.concatenate([np.moveaxis(np.asarray(v[b, :, f]), 0, -1) for f in frames], 1)
                                       for b in range(v.shape[0])], 0)
    grid = np.concatenate([to_img(x), to_img(rec)], 1)
    writer.write_images(step, {"heldout/reconstruction": np.clip((grid + 1) / 2, 0, 1)})
