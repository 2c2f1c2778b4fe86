"""The toy geometry model's training job: Any4D (a small preset) on toyworld with exact supervision.

    python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py --workdir=DIR

Steps: build (once) the train / held-out geometry caches under DIR/data (data.py), initialise the model (host-side
random init with forward-looking rays, lgm/host_init.py) or restore the newest checkpoint, then train through the
training layer (`vggrpo_jax.training`: orbax checkpoints with exact resume, the optax factory, tensorboard +
metrics.jsonl, progress bar, SIGTERM → save). Batches and augmentation noise are functions of (seed, step), so a
resumed run repeats the uninterrupted one exactly. Every `train.eval_every` steps a quick held-out evaluation is
logged; at the end the full held-out report (evaluate.py) is printed and written to DIR/heldout.json, and the model
is exported (export.py) to DIR/export (or config.export.dir), ready for the zoo.
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

from vggrpo_jax import training
from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.errors import ConfigError
from vggrpo_jax.geometry_model.data import GeometryCache, cached, sample_views
from vggrpo_jax.geometry_model.evaluate import bars_met, evaluate, format_report
from vggrpo_jax.geometry_model.export import any4d_config_from, save_model
from vggrpo_jax.geometry_model.losses import LossWeights, geometry_loss, split_geometry_loss
from vggrpo_jax.geometry_model.targets import GeometryTargets, make_targets, mirror
from vggrpo_jax.lgm.host_init import random_any4d


def augment(images: jax.Array, key: jax.Array, blur: float, noise: float) -> jax.Array:
    """(B, N, 3, H, W) in [0, 1] → the same with a random 3×3 blur mix (per view, weight U(0, blur)) and Gaussian noise
    (per view, std U(0, noise)): the soft, noisy frames a VAE decodes."""
    if blur <= 0 and noise <= 0:
        return images
    kb, kn, ks = jax.random.split(key, 3)
    lead = images.shape[:2] + (1, 1, 1)
    k = jnp.ones((3, 3)) / 9.0
    flat = images.reshape((-1,) + images.shape[-2:])
    padded = jnp.pad(flat, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = jax.vmap(lambda x: jax.scipy.signal.convolve2d(x, k, mode="valid"))(padded).reshape(images.shape)
    a = blur * jax.random.uniform(kb, lead)
    sigma = noise * jax.random.uniform(ks, lead)
    out = (1 - a) * images + a * blurred + sigma * jax.random.normal(kn, images.shape)
    return jnp.clip(out, 0.0, 1.0)


def training_example(batch: dict, key: jax.Array, blur: float, noise: float, mirror_prob: float
                     ) -> tuple[jax.Array, GeometryTargets]:
    """A `sample_views` batch → (augmented images (B, N, 3, H, W) in [0, 1], targets): each clip mirrored left–right
    with probability `mirror_prob` (targets.mirror: exact ground truth, a new camera path), then the frames
    blurred and noised (`augment`, the image only). Jittable; the randomness is `key`'s alone."""
    tgt = make_targets(**batch)
    km, ka = jax.random.split(key)
    if mirror_prob > 0:
        tgt = mirror(tgt, jax.random.bernoulli(km, mirror_prob, tgt.images.shape[:1]))
    return augment(tgt.images, ka, blur, noise), tgt


def sincos_positions(grid: int, dim: int) -> np.ndarray:
    """(grid², dim) 2-D sine–cosine position table (MAE's form): half the channels encode the row, half the column,
    each as sin/cos at geometric frequencies 1 … 1/10000; values in [−1, 1]."""
    if dim % 4:
        raise ValueError(f"sincos position table: dim {dim} must be divisible by 4")
    freqs = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def enc(pos: np.ndarray) -> np.ndarray:
        a = pos.reshape(-1, 1) * freqs[None]
        return np.concatenate([np.sin(a), np.cos(a)], 1)

    return np.concatenate([enc(rows), enc(cols)], 1).astype(np.float32)


POS_INITS = ("normal", "sincos")  # init_model's choices for the encoder's position table


def init_model(config: Any, seed: int, pos_init: str = "normal", pos_scale: float = 0.5) -> nnx.Module:
    """A fresh geometry model: `random_any4d` (host-side init, forward-looking rays), with the pose and scale heads'
    MLPs re-drawn with He init and the rotation output biased to the identity quaternion.

    Why: `random_init` draws every linear kernel from N(0, 0.02²) (the ViT init, meant for residual transformer
    layers behind LayerNorms). Through the pose head's plain Linear–ReLU stack that shrinks the signal by ~0.2 per
    layer, its output is its bias, and the quaternion normalisation of a ~0 vector has huge, noisy gradients: the head
    collapses to one constant pose for every view (measured: identity for all clips after 500 steps, rotation error
    stuck at 10.8°). He init keeps the signal, and q = (0, 0, 0, 1) + small makes the normalisation well posed.

    pos_init: "normal" keeps the encoder's learned position table at DINOv2's N(0, 0.02²) draw; "sincos" starts it
    from `pos_scale` × a 2-D sine–cosine table (the CLS row stays 0). Why an option: from scratch, with 0.02-sized
    positions next to patch embeddings of ~0.3, the trunk — which has no position encoding of its own — starts
    blind to where a patch sits, and relative camera pose is a question about where things moved."""
    if pos_init not in POS_INITS:
        raise ConfigError(f"init.pos={pos_init!r}: expected 'normal' or 'sincos'")
    model = random_any4d(config, seed)
    rng = np.random.default_rng([seed, 0x905E])
    ph, sh = model.pose_head, model.scale_head
    hidden = [ph.more_mlps[0], ph.more_mlps[2], sh.proj] + [layer[0] for layer in sh.mlp]
    for layer in hidden + [ph.fc_t, ph.fc_rot, sh.output_proj]:
        k = layer.kernel
        gain = 2.0 if any(layer is h for h in hidden) else 0.1  # ReLU layers: He; outputs: small
        k[...] = jnp.asarray(rng.standard_normal(k.shape) * np.sqrt(gain / k.shape[0]), k[...].dtype)
    ph.fc_rot.bias[...] = jnp.asarray([0.0, 0.0, 0.0, 1.0], ph.fc_rot.bias[...].dtype)
    if pos_init == "sincos":
        pe = model.encoder.model.pos_embed
        table = np.zeros(pe.shape[1:], np.float32)
        table[1:] = pos_scale * sincos_positions(config.pos_grid, pe.shape[-1])
        pe[...] = jnp.asarray(table[None], pe[...].dtype)
    return model


def init_options(c: Any) -> dict:
    """init_model's keyword arguments from config.init (a config without that section gets init_model's defaults)."""
    init = c.get("init", None)
    if init is None:
        return {}
    if str(init.pos) not in POS_INITS:  # checked here too so that a bad key fails before the data is built
        raise ConfigError(f"init.pos={init.pos!r}: expected one of {POS_INITS}")
    return dict(pos_init=str(init.pos), pos_scale=float(init.pos_scale))


def mirror_probability(c: Any) -> float:
    """config.data.mirror_prob (0 when the key is absent: configs written before it), checked to lie in [0, 1]."""
    p = float(c.data.get("mirror_prob", 0.0))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"data.mirror_prob={p}: expected a probability in [0, 1]")
    return p


def dense_batch_size(c: Any) -> int:
    """How many of each batch's clips go through the dense (DPT) heads: config.train.dense_batch_size capped at
    train.batch_size (so a quick run with a small batch needs no second override); the rest train the pose and
    scale heads only. 0 or absent = all of them."""
    b = int(c.train.batch_size)
    k = int(c.train.get("dense_batch_size", 0))
    if k < 0:
        raise ConfigError(f"train.dense_batch_size={k}: expected ≥ 1 (at most train.batch_size), or 0 for all")
    return min(k, b) if k else b


def model_loss(model: nnx.Module, images: jax.Array, tgt: GeometryTargets, weights: LossWeights, dense: int
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss of `model` (Any4D) on images (B, N, 3, H, W): `geometry_loss` on every clip when
    dense ≥ B; otherwise the encoder and trunk run on all B clips, the DPT heads on the first `dense` only, and the
    pose terms cover all B (`split_geometry_loss`). Why: the DPT heads at full resolution are most of a step, while
    camera pose needs many clips per step (a pose-only probe stalled at batch 8 and kept learning at batch 32)."""
    b, n = images.shape[:2]
    if dense >= b:
        return geometry_loss(model(images), tgt, weights)
    emb = model.embed(images)
    tokens, taps = model.run_blocks(emb.tokens, 0, model.config.trunk_depth, n)
    head = model.heads(emb.hook0[:dense], {k: v[:dense] for k, v in taps.items()}, tokens[:dense], n, emb.grid,
                       images.shape[-2:])
    return split_geometry_loss(head, model.cameras(tokens[dense:], n, emb.grid), tgt, weights)


def reward_kwargs(c: Any) -> dict:
    return dict(c.eval.reward)


def mask_threshold(c: Any) -> float | None:
    """config.eval.mask_threshold; a negative value keeps every pixel in r_geo (no sky removal)."""
    t = float(c.eval.mask_threshold)
    return t if t >= 0 else None


def _caches(c: Any, workdir: str) -> tuple[GeometryCache, GeometryCache]:
    hw = (int(c.data.image_size), int(c.data.image_size))
    root = os.path.join(workdir, "data")
    kw = dict(source=c.data.source, data_dir=c.data.data_dir or None, data_config=c.data.data_config)
    train = cached(os.path.join(root, "train.npz"), "train", int(c.data.num_train), hw, **kw)
    heldout = cached(os.path.join(root, "heldout.npz"), "heldout", int(c.data.num_heldout), hw, **kw)
    return train, heldout


def run(c: Any, workdir: str) -> dict:
    """Trains (or resumes) and returns the final held-out report."""
    if int(c.train.max_consecutive_skips) < 0:
        raise ConfigError(f"train.max_consecutive_skips={c.train.max_consecutive_skips}: must be ≥ 0 (0: never stop)")
    os.makedirs(workdir, exist_ok=True)
    model_cfg = any4d_config_from(c.model)
    init_kw = init_options(c)  # these three fail on a bad value before the data is built
    mirror_prob = mirror_probability(c)
    dense_bsz = dense_batch_size(c)
    weights = LossWeights(**dict(c.loss))
    total = int(c.train.num_steps)
    bsz, nviews = int(c.train.batch_size), int(c.data.num_views)
    tx = training.make_optimizer(training.OptimConfig.from_config(c.optim), total_steps=total)
    train_cache, heldout_cache = _caches(c, workdir)
    logging.info("geometry data: %d train clips, %d held-out clips at %s", len(train_cache), len(heldout_cache),
                 train_cache.video.shape[2:4])

    model = init_model(model_cfg, int(c.seed), **init_kw)
    graphdef, params = nnx.split(model)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    logging.info("geometry model: %.2f M parameters", n_params / 1e6)
    state = {"params": params, "opt": tx.init(params)}
    ckpt = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=2)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, _ = ckpt.restore(state)
        logging.info("resumed at step %d", start)

    seed, blur, noise = int(c.seed), float(c.data.augment_blur), float(c.data.augment_noise)

    def train_step(state, batch, step):
        images, tgt = training_example(batch, jax.random.fold_in(jax.random.key(seed), step), blur, noise, mirror_prob)

        def loss_fn(p):
            return model_loss(nnx.merge(graphdef, p), images, tgt, weights, dense_bsz)

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        params, opt, skipped = training.guarded_update(tx, grads, state["opt"], state["params"], loss)
        return {"params": params, "opt": opt}, {"loss": loss, "grad_norm": optax.global_norm(grads), "skipped": skipped,
                                                **{f"loss/{k}": v for k, v in terms.items()}}

    step_fn = jax.jit(train_step, donate_argnums=0)
    rkw = reward_kwargs(c)

    def quick_eval(step: int) -> dict:
        rep = evaluate(nnx.merge(graphdef, state["params"]), heldout_cache, num_clips=int(c.train.eval_clips),
                       batch_size=int(c.eval.batch_size), reward_kwargs=rkw,
                       mask_threshold=mask_threshold(c), min_baseline=float(c.eval.min_baseline))
        out = {f"heldout/{k}": v for k, v in rep["mean"].items()}
        out.update({"heldout/spearman_motion": rep["spearman_motion"], "heldout/spearman_geo": rep["spearman_geo"]})
        return out

    writer = training.MetricWriter(workdir)
    loop = training.TrainLoop(
        total, start, writer=writer, samples_per_step=bsz, log_every=int(c.train.log_every),
        checkpoint=lambda s: ckpt.save(s, state), checkpoint_every=int(c.train.checkpoint_every),
        checkpoint_wait=ckpt.wait, profile_steps=int(c.train.profile_steps), workdir=workdir, desc="geometry",
        max_consecutive_skips=int(c.train.max_consecutive_skips),
        postfix=("loss",))
    if int(c.train.eval_every) > 0:
        loop.every(int(c.train.eval_every), quick_eval, at_end=False)
    # An exception (a divergence, a bad batch) must still flush the checkpoint in flight and the metrics file.
    try:
        with loop:
            for step in loop:
                batch = sample_views(train_cache, seed, step, bsz, nviews, tuple(c.data.strides),
                                     float(c.data.reverse_prob))
                state, metrics = step_fn(state, batch, step)
                loop.step_done(step, metrics)
        ckpt.wait()

        final = nnx.merge(graphdef, state["params"])
        report = evaluate(final, heldout_cache, num_clips=int(c.eval.num_clips), batch_size=int(c.eval.batch_size),
                          reward_kwargs=rkw, mask_threshold=mask_threshold(c),
                          min_baseline=float(c.eval.min_baseline))
        writer.write(total, {f"final/{k}": v for k, v in report["mean"].items()})
    finally:
        ckpt.close()
        writer.close()
    text = format_report(report)
    print(text, flush=True)
    summary = {"mean": report["mean"], "spearman_motion": report["spearman_motion"],
               "spearman_geo": report["spearman_geo"], "num_clips": report["num_clips"],
               "bars_met": bars_met(report)}
    with open(os.path.join(workdir, "heldout.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    info = {
        "config": json.loads(c.to_json_best_effort()),
        "steps": total,
        "data": {"dataset": f"toyworld/{c.data.data_config}", "train_seeds": sorted(int(s) for s in train_cache.seed),
                 "heldout_seeds": sorted(int(s) for s in heldout_cache.seed[: int(c.eval.num_clips)]),
                 "split": {"train": [0, T.HELDOUT_SEED_BASE], "heldout_base": T.HELDOUT_SEED_BASE},
                 "image_size": int(c.data.image_size), "num_views": nviews},
        "heldout": summary,
        "parameters": n_params,
    }
    export_dir = c.get("export", {}).get("dir", "") or os.path.join(workdir, "export")
    save_model(export_dir, final, dict(c.model), info)
    return report


__all__ = ["augment", "dense_batch_size", "init_model", "init_options", "mirror_probability", "model_loss", "run",
           "sincos_positions", "training_example"]
