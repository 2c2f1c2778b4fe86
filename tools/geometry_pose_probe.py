"""How fast can the toy geometry model learn camera pose? A pose-only training probe (issue 12's geometry bars).

    python tools/geometry_pose_probe.py --config=configs/geometry_toy.py --workdir=DIR --out=OUT \
        [--steps=3000] [--eval_every=500] [--config.data.strides=4, --config.data.reverse_prob=0 ...]

The full geometry job spends most of a step in the DPT heads at full resolution; pose needs only the encoder, the
trunk and the pose head. This probe trains the same model (`geometry_model.job.init_model`, the same config, data
caches under WORKDIR/data, view sampling and augmentation, mirroring included) on the pose terms alone
(geometry_model.losses.pose_terms: quaternion distance × `loss.rot`, view-0-frame translation over the scene's size ×
`loss.trans`) through `Any4D.cameras`, without the dense heads, so a step costs a fraction of the job's (measured in
the run and printed). It answers "is pose learnable in this setting, and how quickly" in minutes, before a full run.

Every `eval_every` steps: mean pairwise relative rotation error and translation-direction error (degrees, the
latter over pairs with a baseline ≥ eval.min_baseline × the median depth: geometry_model.evaluate.clip_metrics, as
the job reports them) on the RGB path's views of 32 train and `eval.num_clips` held-out clips, next to the rotation
error of predicting the identity for every view. Writes OUT/curve.json and OUT/curve.png.

This trains no shipped model: its use is choosing the geometry job's settings (views, learning rate, widths).
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

OUT = flags.DEFINE_string("out", None, "output directory (curve.json, curve.png)", required=True)
STEPS = flags.DEFINE_integer("steps", 3000, "pose-only training steps")
EVAL_EVERY = flags.DEFINE_integer("eval_every", 500, "evaluate every this many steps")


def main(config, workdir: str) -> None:
    import jax  # noqa: PLC0415  (after the flags parsed)
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from vggrpo_jax import training  # noqa: PLC0415
    from vggrpo_jax.geometry_model import job  # noqa: PLC0415
    from vggrpo_jax.geometry_model.data import gather, sample_views  # noqa: PLC0415
    from vggrpo_jax.geometry_model.evaluate import clip_metrics, relative_pose_errors  # noqa: PLC0415
    from vggrpo_jax.geometry_model.export import any4d_config_from  # noqa: PLC0415
    from vggrpo_jax.geometry_model.losses import pose_terms  # noqa: PLC0415
    from vggrpo_jax.geometry_model.targets import make_targets  # noqa: PLC0415
    from vggrpo_jax.lgm.correspondence import view_frame_indices  # noqa: PLC0415

    c = config
    steps, every = int(STEPS.value), int(EVAL_EVERY.value)
    if steps < 1 or every < 1:
        raise ValueError(f"--steps={steps} and --eval_every={every} must be ≥ 1")
    os.makedirs(OUT.value, exist_ok=True)
    init_kw = job.init_options(c)  # a bad init.pos or data.mirror_prob fails before the caches are built
    mirror_prob = job.mirror_probability(c)
    train, held = job._caches(c, workdir)  # noqa: SLF001  (the job's own caches, built once under WORKDIR/data)
    model = job.init_model(any4d_config_from(c.model), int(c.seed), **init_kw)
    graphdef, params = nnx.split(model)
    tx = training.make_optimizer(training.OptimConfig.from_config(c.optim, where="optim"), total_steps=steps)
    opt = tx.init(params)
    w_rot, w_trans = float(c.loss.rot), float(c.loss.trans)
    seed, blur, noise = int(c.seed), float(c.data.augment_blur), float(c.data.augment_noise)
    min_baseline = float(c.eval.min_baseline)

    def loss_fn(p, images, tgt):
        model = nnx.merge(graphdef, p)
        emb = model.embed(images)
        tokens, _ = model.run_blocks(emb.tokens, 0, model.config.trunk_depth, images.shape[1])
        rot, trans = pose_terms(*model.cameras(tokens, images.shape[1], emb.grid), tgt)
        return w_rot * rot + w_trans * trans, (rot, trans)

    @jax.jit
    def step_fn(p, o, batch, i):
        images, tgt = job.training_example(batch, jax.random.fold_in(jax.random.key(seed), i), blur, noise,
                                           mirror_prob)
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, images, tgt)
        p, o, _ = training.guarded_update(tx, g, o, p, loss)
        return p, o, loss, aux

    @jax.jit
    def errors_fn(p, batch):
        tgt = make_targets(**batch)
        m = clip_metrics(nnx.merge(graphdef, p)(tgt.images), tgt, min_baseline)  # the job's held-out errors
        eye = jnp.broadcast_to(jnp.eye(4), tgt.c2w.shape)
        rot0, _, _ = relative_pose_errors(eye.at[..., :3, 3].set(tgt.c2w[..., :3, 3]), tgt.c2w)
        return m["rot_deg"], m["tdir_deg"], jnp.mean(rot0, 1)

    frames = np.asarray(view_frame_indices(1 + (train.num_frames - 1) // 4, 4, "last"))
    batch_size = int(c.eval.batch_size)

    def errors(p, cache, n):
        rows = []
        for lo in range(0, n, batch_size):
            idx = np.arange(lo, lo + batch_size) % n
            rows.append(jax.device_get(errors_fn(p, gather(cache, idx, np.broadcast_to(frames, (len(idx),
                                                                                                frames.size))))))
        rot, tdir, rot0 = (np.concatenate([r[k] for r in rows])[:n] for k in range(3))
        return {"rot_deg": float(rot.mean()), "tdir_deg": float(tdir.mean()), "identity_rot_deg": float(rot0.mean())}

    n_held, n_train = min(int(c.eval.num_clips), len(held)), min(32, len(train))
    curve = [{"step": 0, "train": errors(params, train, n_train), "heldout": errors(params, held, n_held)}]
    print(json.dumps(curve[-1]), flush=True)
    t_run, timed = 0.0, 0
    for i in range(steps):
        batch = sample_views(train, seed, i, int(c.train.batch_size), int(c.data.num_views), tuple(c.data.strides),
                             float(c.data.reverse_prob))
        t0 = time.perf_counter()
        params, opt, loss, (rot, trans) = step_fn(params, opt, batch, jnp.int32(i))
        jax.block_until_ready(loss)
        if i > 0:  # step 0 compiles
            t_run, timed = t_run + time.perf_counter() - t0, timed + 1
        if (i + 1) % every == 0 or i + 1 == steps:
            row = {"step": i + 1, "loss": float(loss), "rot_loss": float(rot), "trans_loss": float(trans),
                   "step_seconds": t_run / max(timed, 1),
                   "train": errors(params, train, n_train), "heldout": errors(params, held, n_held)}
            curve.append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(OUT.value, "curve.json"), "w") as f:
        json.dump({"config": c.to_dict(), "curve": curve}, f, indent=1, default=str)
    _plot(os.path.join(OUT.value, "curve.png"), curve)


def _plot(path: str, curve: list[dict]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    xs = [r["step"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["heldout"]["rot_deg"] for r in curve], "o-", label="held-out")
    ax.plot(xs, [r["train"]["rot_deg"] for r in curve], "s--", label="train (32 clips)")
    ax.plot(xs, [r["heldout"]["identity_rot_deg"] for r in curve], ":", label="identity for every view")
    ax.axhline(2.0, color="k", lw=0.8, label="bar (2°)")
    ax.set_xlabel("step")
    ax.set_ylabel("relative rotation error (°)")
    ax.set_title("pose-only probe")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(main)
