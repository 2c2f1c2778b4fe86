"""Test-time LGM guidance against guidance scale (issue 14, item 3): metrics, manifold checks, cost per sample.

    python tools/guidance_sweep.py --config=configs/toy.py --workdir=DIR --out=OUT \
        [--checkpoints=base,latest] [--scales=0,0.25,0.5,1,2] [--num_prompts=64] [--num_steps=N] [--seed=S] \
        [--batch_size=B] [--config.guidance.steps=::2 --config.guidance.weights.geo=0 ...]

For every checkpoint (base = adapters off; latest / N = a GRPO run's EMA adapters, so "does guidance add to GRPO?")
and every scale, the same held-out prompts (config.prompts.eval_path, toyworld captions for the toy config) are
sampled from the same noise (video i: fold_in(key(seed), i)) with one compiled guided sampler (the scale is an
argument; scale 0 is the unguided sampler bit for bit), then scored:

    RGB path   decode → the geometry model on the frames: rgb_motion, rgb_geo, rgb_e_trans, rgb_e_rot
    pixels     Epi. (SIFT + RANSAC + Sampson), VBench-style smoothness / dynamic degree (evaluation/)
    LGM        latent_motion, latent_geo, latent_e_trans, latent_e_rot (what guidance climbs)
    manifold   latent_std (adversarial latents drift in norm), vae_roundtrip (mean |D(E(x)) − x| of the decoded
               video: off-manifold frames reconstruct worse), pixel_mean / pixel_std (colour statistics) and
               frame_smoothness (the frame-difference score), each to be read against scale 0
    cost       seconds per sample of the sampler (after compilation), and its ratio to scale 0, measured in this run

Writes OUT/records.jsonl (one line per sample and setting), OUT/sweep.json + OUT/sweep.md (mean ± s.e. of every
metric per checkpoint and scale, and the cost), OUT/sweep.png (the metrics against scale), and OUT/report.{md,json}
(evaluation.write_report: per-split means and win rates of every setting against base at scale 0).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

# Its own flags; --config (with overrides) and --workdir come from cli.run_job.
OUT = flags.DEFINE_string("out", None, "output directory", required=True)
CHECKPOINTS = flags.DEFINE_string("checkpoints", "base", "comma list of base | latest | N")
SCALES = flags.DEFINE_string("scales", "0,0.25,0.5,1,2", "comma list of guidance scales (0 = unguided; included)")
NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 64, "held-out prompts (toyworld: config.prompts.toyworld_count ≥)")
NUM_STEPS = flags.DEFINE_integer("num_steps", None, "ODE steps (default: config.eval.num_steps)")
SEED = flags.DEFINE_integer("seed", 0, "noise seed")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "videos per sampler call (0: one per batch shard)")

PLOTTED = ("rgb_motion", "rgb_geo", "rgb_e_trans", "rgb_e_rot", "epi_sampson", "latent_motion", "latent_geo",
           "latent_std", "vae_roundtrip", "pixel_std", "frame_smoothness")
MANIFOLD = ("latent_std", "vae_roundtrip", "pixel_mean", "pixel_std", "frame_smoothness")


def parse_scales(spec: str) -> list[float]:
    try:
        scales = sorted({float(s) for s in spec.split(",") if s.strip()} | {0.0})
    except ValueError:
        raise ValueError(f"--scales={spec!r}: give a comma list of numbers") from None
    bad = [s for s in scales if not math.isfinite(s) or s < 0]
    if bad:
        raise ValueError(f"--scales={spec!r}: scales must be finite and ≥ 0, got {bad}")
    return scales


def sweep(config: Any, workdir: str, out: str, checkpoints: Sequence[str], scales: Sequence[float],
          num_prompts: int, num_steps: int | None, seed: int, batch_size: int = 0) -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from vggrpo_jax import backbones as build

    from vggrpo_jax import parallel  # noqa: PLC0415
    from vggrpo_jax.config import validate  # noqa: PLC0415
    from vggrpo_jax.evaluation import frame_smoothness  # noqa: PLC0415
    from vggrpo_jax.grpo.evaluator import sample_records  # noqa: PLC0415
    from vggrpo_jax.evaluation import summarize, write_report  # noqa: PLC0415
    from vggrpo_jax.guidance import guidance_spec  # noqa: PLC0415
    from vggrpo_jax.lgm.rgb_path import RGBGeometryPath  # noqa: PLC0415
    from vggrpo_jax.sampling import SamplingJob, checkpoint_step, initial_noise, parse_checkpoint  # noqa: PLC0415
    from vggrpo_jax.rewards import geometry_rewards  # noqa: PLC0415

    # Every mistake before any model is built.
    config = validate(config)
    num_steps = int(config.eval.num_steps if num_steps is None else num_steps)
    spec = guidance_spec(config, num_steps)
    checkpoints = [parse_checkpoint(c) for c in checkpoints]
    for c in checkpoints:
        if c != "base":
            checkpoint_step(workdir, c)
    if config.prompts.path == "toyworld" or config.prompts.eval_path == "toyworld":
        config.prompts.toyworld_count = max(int(config.prompts.toyworld_count), num_prompts)
    prompt_set = build.load_prompts_with_splits(config, eval_split=True)[:num_prompts]
    if len(prompt_set) < num_prompts:
        raise ValueError(f"--num_prompts={num_prompts}: the held-out prompt set has only {len(prompt_set)}")
    prompts, splits = [p for p, _ in prompt_set], [s for _, s in prompt_set]

    job = SamplingJob(config, workdir, num_steps, prompts)
    shards = job.batch_shards()
    batch = batch_size or shards
    if batch % shards:
        raise ValueError(f"--batch_size={batch} does not split over the {shards} batch shards")
    rgb = RGBGeometryPath(job.vae, job.any4d, spatial_stride=int(job.lgm.connector.config.stride[-1]),
                          view_frame_rule=job.lgm.view_frame_rule)
    rgb_graphdef, rgb_state = nnx.split(rgb)
    rgb_state = parallel.place_state(rgb_state, job.mesh)
    vae_graphdef, vae_state = nnx.split(job.vae)
    vae_state = parallel.place_state(vae_state, job.mesh)
    rgb_rewards = jax.jit(lambda s, z: geometry_rewards(nnx.merge(rgb_graphdef, s)(z), config.rewards))

    def roundtrip(s, video):  # mean |D(E(x)) − x| per sample, x the decoded video in [−1, 1]
        vae = nnx.merge(vae_graphdef, s)
        again = vae.decode(vae.encode(video)[0])  # the posterior mean
        return jnp.mean(jnp.abs(again - video), axis=(1, 2, 3, 4))

    roundtrip = jax.jit(roundtrip)
    uncond = parallel.replicate(jnp.asarray(job.uncond), job.mesh)
    mesh_ctx = (lambda: jax.set_mesh(job.mesh)) if job.mesh is not None else None

    records: dict[str, list[dict]] = {}
    cost: dict[str, float] = {}
    for ckpt in checkpoints:
        lora, step = job.adapters(ckpt)
        for scale in scales:
            name = f"{ckpt}@s={scale:g}"
            rows_all, seconds, count = [], 0.0, 0
            for start in range(0, len(prompts), batch):
                idx = list(range(start, min(start + batch, len(prompts))))
                rows = idx + [idx[-1]] * (batch - len(idx))
                cond = parallel.shard_batch(job.encode([prompts[i] for i in rows]), job.mesh)
                x_init = parallel.shard_batch(initial_noise(seed, rows, job.latent), job.mesh)
                if start == 0:  # compile (and warm) outside the timing
                    jax.block_until_ready(job.sampler.sample(lora, cond, uncond, x_init, scale))
                t0 = time.perf_counter()
                z0, trace = job.sampler.sample(lora, cond, uncond, x_init, scale)
                jax.block_until_ready(z0)
                seconds += time.perf_counter() - t0
                count += len(rows)
                latent = job.trainer.latent_rewards(z0)
                video = job.decode(z0)
                if mesh_ctx is not None:
                    with mesh_ctx():
                        rgb_r = jax.device_get(rgb_rewards(rgb_state, z0))
                        rt = np.asarray(jax.device_get(roundtrip(vae_state, jnp.asarray(video))))
                else:
                    rgb_r = jax.device_get(rgb_rewards(rgb_state, z0))
                    rt = np.asarray(jax.device_get(roundtrip(vae_state, jnp.asarray(video))))
                n = len(idx)
                recs = sample_records(video, latent, rgb_r, [prompts[i] for i in idx], [splits[i] for i in idx],
                                      seed, int(config.video.fps))
                z = np.asarray(jax.device_get(z0))
                smooth = frame_smoothness(np.asarray(video))
                skipped = np.asarray(jax.device_get(trace.skipped)).sum(axis=0)
                for j, r in enumerate(recs):
                    r.update(seed=idx[j], checkpoint=str(ckpt), step=step, scale=float(scale),
                             latent_std=float(z[j].std()), vae_roundtrip=float(rt[j]),
                             pixel_mean=float(video[j].mean()), pixel_std=float(video[j].std()),
                             frame_smoothness=float(smooth[j]), guidance_skipped_steps=int(skipped[j]))
                rows_all += recs[:n]
            records[name] = rows_all
            cost[name] = seconds / count
    return _write(out, records, cost, checkpoints, scales, spec, num_steps, summarize, write_report)


def _write(out, records, cost, checkpoints, scales, spec, num_steps, summarize, write_report) -> dict:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "records.jsonl"), "w") as fh:
        for name, rs in records.items():
            for r in rs:
                fh.write(json.dumps({"setting": name, **r}) + "\n")
    metrics = [m for m in PLOTTED + ("pixel_mean", "epi_failed", "dynamic_degree") if m in next(iter(records.values()))[0]]
    table = {name: summarize(rs, metrics)["all"] for name, rs in records.items()}
    base_cost = {str(c): cost[f"{c}@s=0"] for c in checkpoints}
    result = {"num_steps": num_steps, "guidance": {"steps": list(spec.options.steps), "schedule": spec.options.schedule,
                                                   "clip": spec.options.clip,
                                                   "through_model": spec.options.through_model,
                                                   "weights": dict(spec.weights)},
              "summary": table,
              "seconds_per_sample": cost,
              "cost_vs_unguided": {n: cost[n] / base_cost[n.split("@")[0]] for n in cost}}
    with open(os.path.join(out, "sweep.json"), "w") as fh:
        json.dump(result, fh, indent=1, allow_nan=True)
    lines = [f"# LGM guidance sweep ({num_steps} ODE steps; guided steps {list(spec.options.steps)}, schedule "
             f"{spec.options.schedule}, clip {spec.options.clip}, through_model {spec.options.through_model}, "
             f"weights {dict(spec.weights)})", "",
             "| setting | s/sample | × unguided | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name, row in table.items():
        cells = [f"{row[m]['mean']:.4g} ± {row[m]['sem']:.2g}" + (f" ({row[m]['nonfinite']} n/f)"
                                                                  if row[m]['nonfinite'] else "") for m in metrics]
        lines.append(f"| {name} | {cost[name]:.3g} | {result['cost_vs_unguided'][name]:.2f} | " + " | ".join(cells)
                     + " |")
    lines += ["", "Manifold checks: " + ", ".join(MANIFOLD) + " should stay near their scale-0 values; a drift that "
              "grows with the scale while the LGM rewards rise means guidance found adversarial latents."]
    with open(os.path.join(out, "sweep.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")

    cols = 4
    rows = math.ceil(len(PLOTTED) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, m in zip(axes.flat, PLOTTED):
        for c in checkpoints:
            xs = [s for s in scales]
            ys = [table[f"{c}@s={s:g}"][m]["mean"] if m in table[f"{c}@s={s:g}"] else float("nan") for s in xs]
            es = [table[f"{c}@s={s:g}"][m]["sem"] if m in table[f"{c}@s={s:g}"] else float("nan") for s in xs]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=str(c))
        ax.set_title(m)
        ax.set_xlabel("guidance scale")
    for ax in list(axes.flat)[len(PLOTTED):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=80)
    plt.close(fig)
    write_report(out, records, baseline=f"{checkpoints[0]}@s=0")
    return result


def main(config: Any, workdir: str) -> None:
    result = sweep(config, workdir, OUT.value,
                   [c.strip() for c in CHECKPOINTS.value.split(",") if c.strip()], parse_scales(SCALES.value),
                   NUM_PROMPTS.value, NUM_STEPS.value, SEED.value, BATCH_SIZE.value)
    print(open(os.path.join(OUT.value, "sweep.md")).read())
    del result


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: E402

    cli.run_job(main)
