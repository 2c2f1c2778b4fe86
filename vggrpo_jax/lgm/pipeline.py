"""The LGM job: teacher cache → stitching search → alignment fine-tuning → save → evaluate.

Entry point: python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py --workdir=DIR [--config.align.steps=...]
(the GRPO job also runs it first when its config names an lgm.build_config).

Workdir layout (every stage resumes from what is already there):
    cache/{train,heldout}/   teacher targets, one teacher pass per clip (lgm/data.py)
    stitch/<variant>_l<ℓ>/   orbax checkpoints of each connector fit; stitch/curve.json; stitch_curve.png
    align/                   orbax checkpoints of the alignment stage (params, opt state, step, rng, data position)
    lgm/                     the saved LGM (lgm.json + connector/ + lora/), loadable by lgm.model.load_lgm
    eval.json                agreement with the RGB path and the teacher, robustness to latent noise
    metrics.jsonl, tb/       metrics of every stage (training.MetricWriter: metrics.jsonl + tensorboard)
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from vggrpo_jax.backbones import build_any4d, build_vae
from vggrpo_jax.lgm.config import validate_lgm
from vggrpo_jax.lgm.connector import ConnectorConfig
from vggrpo_jax.lgm.data import (
    Concat,
    GeneratedClips,
    TeacherCache,
    ToyworldClips,
    ToyworldDatasetClips,
    VideoDirectoryClips,
    build_teacher_cache,
    make_target_fn,
    split_heldout,
)
from vggrpo_jax.lgm.evaluate import (
    agreement_report,
    format_robustness,
    jit_module,
    make_reward_fn,
    robustness_report,
)
from vggrpo_jax.lgm.finetune import finetune, heldout_alignment
from vggrpo_jax.lgm.model import LatentGeometryModel, save_lgm
from vggrpo_jax.lgm.rgb_path import RGBGeometryPath
from vggrpo_jax.lgm.stitching import plot_curve, stitching_search
from vggrpo_jax.models.any4d import Any4D, Any4DOutput, to_scene_geometry
from vggrpo_jax.models.wan.vae import WanVAE
from vggrpo_jax.rewards import RewardOptions
from vggrpo_jax.training import MetricWriter, OptimConfig


# ------------------------------------------------------------------------------------------------ models
def connector_variants(c: ConfigDict) -> dict[str, ConnectorConfig]:
    base = c.connector.to_dict()
    return {name: ConnectorConfig.from_dict({**base, **dict(over)}) for name, over in c.stitch.variants.items()}


# ------------------------------------------------------------------------------------------------ data
def build_sources(c: ConfigDict) -> tuple[Any, Any]:
    """(train, held-out) clip sources: each configured source split by data.heldout_fraction."""
    d = c.data
    sources, splits = [], []
    if d.toyworld.num_clips and d.toyworld.dataset:
        n = int(d.toyworld.num_clips)
        k = max(1, int(round(n * float(d.heldout_fraction))))
        shape = dict(num_frames=d.num_frames, height=d.height, width=d.width)
        splits.append((ToyworldDatasetClips(d.toyworld.dataset, "train", n - k, **shape),
                       ToyworldDatasetClips(d.toyworld.dataset, "heldout", k, **shape)))
    elif d.toyworld.num_clips:
        sources.append(ToyworldClips(int(d.toyworld.num_clips), seed=int(d.toyworld.seed), num_frames=d.num_frames,
                                     height=d.height, width=d.width, checker_size=float(d.toyworld.checker_size)))
    if d.videos.path:
        sources.append(VideoDirectoryClips(d.videos.path, num_frames=d.num_frames, height=d.height, width=d.width,
                                           max_clips=int(d.videos.max_clips)))
    if d.generated.path:
        sources.append(GeneratedClips(d.generated.path, max_clips=int(d.generated.max_clips)))
    splits += [split_heldout(s, float(d.heldout_fraction)) for s in sources]
    return Concat([s[0] for s in splits]), Concat([s[1] for s in splits])


def build_caches(c: ConfigDict, workdir: str, vae: WanVAE, any4d: Any4D, progress: bool) -> tuple[TeacherCache, TeacherCache]:
    stride = int(c.connector.stride[1])
    layers = sorted({int(l) for l in c.stitch.layers})
    identity = {
        "vae": [c.vae.preset, c.vae.checkpoint, c.vae.dtype, c.seed],
        "any4d": [c.any4d.preset, c.any4d.checkpoint, c.any4d.dtype, c.seed],
        "layers": layers, "spatial_stride": stride, "view_frame_rule": c.correspondence.view_frame_rule,
    }
    # The teacher is the base model: LoRA adapters start at zero (identity), so caching before any training is exact.
    target_fn = make_target_fn(vae, any4d, layers, spatial_stride=stride,
                               view_frame_rule=c.correspondence.view_frame_rule)
    root = c.data.cache_dir or os.path.join(workdir, "cache")
    train_src, held_src = build_sources(c)
    kw = dict(identity=identity, batch_size=int(c.data.batch_size), shard_size=int(c.data.shard_size),
              dtype=c.data.cache_dtype, progress=progress)
    train = build_teacher_cache(os.path.join(root, "train"), train_src, target_fn, **kw)
    held = build_teacher_cache(os.path.join(root, "heldout"), held_src, target_fn, **kw)
    return train, held


def cached_teacher_geometry(batch: dict) -> Any:
    """SceneGeometry of the teacher on the original frames, from the cached outputs (out_<field>)."""
    fields = {k[4:]: jnp.asarray(v) for k, v in batch.items() if k.startswith("out_")}
    return to_scene_geometry(Any4DOutput(**fields))


def _batches(cache: TeacherCache, keys: list[str], batch_size: int, max_clips: int, start: int = 0,
             stop: int | None = None):
    """Batches of clips start..stop−1 of the cache (at most max_clips of them; 0 = all)."""
    stop = len(cache) if stop is None else stop
    n = min(stop, start + max_clips) if max_clips else stop
    for lo in range(start, n, batch_size):
        items = [cache.get(i, keys) for i in range(lo, min(n, lo + batch_size))]
        yield {k: np.stack([it[k] for it in items]) for k in keys}


def heldout_ranges(c: ConfigDict) -> dict[str, tuple[int, int]]:
    """{source kind: (start, stop)} of each configured source's clips in the held-out cache (build_sources' order)."""
    _, held = build_sources(c)
    return {s.describe()["kind"] if isinstance(s.describe(), dict) else f"source{i}":
            (int(held.offsets[i]), int(held.offsets[i + 1])) for i, s in enumerate(held.sources)}


# ------------------------------------------------------------------------------------------------ run
def run(c: ConfigDict, workdir: str, *, align_stop_after: int | None = None) -> dict:
    """All stages (see module doc). Returns the summary also written to <workdir>/eval.json.

    align_stop_after: stop the alignment stage at this step (after checkpointing), as an interrupted run would;
    the summary then has "finished": False and nothing after the alignment stage runs.
    """
    validate_lgm(c)
    os.makedirs(workdir, exist_ok=True)
    progress = bool(c.train.progress)
    writer = MetricWriter(workdir)
    try:
        vae, any4d = build_vae(c), build_any4d(c)
        train, held = build_caches(c, workdir, vae, any4d, progress)

        latent_channels = vae.config.z_dim
        stitch = stitching_search(
            train=train, heldout=held, variants=connector_variants(c), layers=list(c.stitch.layers),
            latent_channels=latent_channels, any4d_config=any4d.config, steps=int(c.stitch.steps),
            batch_size=int(c.stitch.batch_size), optim=OptimConfig.from_config(c.stitch.optim, where="stitch.optim"),
            seed=int(c.seed), criterion_kind=c.stitch.criterion, weights=dict(c.stitch.weights),
            workdir=os.path.join(workdir, "stitch"), save_every=int(c.train.save_every),
            log_every=int(c.train.log_every), writer=writer,
            max_consecutive_skips=int(c.train.max_consecutive_skips),
            progress=progress,
        )
        plot_curve(stitch, os.path.join(workdir, "stitch_curve.png"))

        lgm = LatentGeometryModel(stitch.best, any4d, view_frame_rule=c.correspondence.view_frame_rule,
                                  temporal_stride=vae.config.temporal_stride)
        weights = {k: float(v) for k, v in c.align.weights.items()}
        eval_bs = int(c.eval.batch_size)
        align_before = heldout_alignment(lgm, held, weights, eval_bs)
        summary: dict[str, Any] = {"stitch": stitch.to_json(), "align_before": align_before}
        if int(c.align.steps) > 0:
            lgm, result = finetune(
                lgm, train, steps=int(c.align.steps), batch_size=int(c.align.batch_size),
                optim=OptimConfig.from_config(c.align.optim, where="align.optim"), weights=weights, seed=int(c.seed),
                train_lora=bool(c.align.train_lora), latent_noise_std=float(c.align.latent_noise_std),
                ckpt_dir=os.path.join(workdir, "align"), save_every=int(c.train.save_every),
                log_every=int(c.train.log_every), writer=writer,
                max_consecutive_skips=int(c.train.max_consecutive_skips),
                progress=progress, stop_after=align_stop_after,
                # The job's one profiler window: the alignment stage, the longest fit and the LGM's final parameters
                # (the stitching search runs many short fits of one connector each).
                profile_steps=int(c.train.profile_steps), workdir=workdir,
            )
            if not result.finished:
                summary["finished"] = False
                summary["align_step"] = result.step
                return summary
        summary["align_after"] = heldout_alignment(lgm, held, weights, eval_bs)
        save_lgm(os.path.join(workdir, "lgm"), lgm, force=True, extra={
            "vae_preset": c.vae.preset, "any4d_preset": c.any4d.preset, "any4d_checkpoint": c.any4d.checkpoint,
            "stitch_criterion": stitch.criterion, "stitch_variant": stitch.best_variant,
        })

        # Evaluation on held-out clips.
        rgb = RGBGeometryPath(vae, any4d, spatial_stride=int(c.connector.stride[1]),
                              view_frame_rule=c.correspondence.view_frame_rule)
        lgm_fn, rgb_fn = jit_module(lgm), jit_module(rgb)
        reward_fn = make_reward_fn(RewardOptions.from_config(c.eval.reward, where="eval.reward"))
        keys = ["latents"] + [k for k in held.keys if k.startswith("out_")]
        agreement = agreement_report(lgm_fn, rgb_fn, _batches(held, keys, eval_bs, int(c.eval.max_clips)),
                                     reward_fn=reward_fn, teacher_fn=cached_teacher_geometry)
        latents = np.concatenate([b["latents"] for b in _batches(held, ["latents"], eval_bs, int(c.eval.max_clips))])
        robust = robustness_report(lgm_fn, rgb_fn, latents, list(c.eval.sigmas), seed=int(c.seed),
                                   batch_size=eval_bs)
        ranges = heldout_ranges(c)
        if len(ranges) > 1:  # the pooled figures above, and each source's own (real clips vs generated samples)
            agreement["by_source"] = {
                kind: agreement_report(lgm_fn, rgb_fn, _batches(held, keys, eval_bs, int(c.eval.max_clips), lo, hi),
                                       reward_fn=reward_fn, teacher_fn=cached_teacher_geometry)
                for kind, (lo, hi) in ranges.items()}
        summary.update(finished=True, agreement=agreement, robustness=robust)
        writer.write(int(c.align.steps), {**{f"eval/vs_rgb/{k}": v for k, v in agreement["vs_rgb"].items()},
                                          **{f"eval/{k}": v for k, v in agreement.items() if k.startswith("spearman_")}})
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump(summary, f, indent=2, default=float)
        print(report_text(summary))
        return summary
    finally:
        writer.close()


def report_text(summary: dict) -> str:
    s = summary["stitch"]
    lines = [f"stitching ({s['criterion']}): ℓ̂ = {s['best_layer']} ({s['best_variant']})"]
    for v, curve in s["curve"].items():
        pts = ", ".join(f"ℓ={l}: {e['criterion']:.4f} (untrained {s['untrained'][v][l]['criterion']:.3f})"
                        for l, e in curve.items())
        lines.append(f"  {v}: {pts}")
    lines.append(f"held-out L_align: before {summary['align_before']['loss']:.4f} → after "
                 f"{summary['align_after']['loss']:.4f}")
    a = summary["agreement"]
    for ref in ("vs_rgb", "vs_teacher", "rgb_vs_teacher"):
        if ref in a:
            lines.append(f"  {ref}: " + ", ".join(f"{k} {v:.4g}" for k, v in a[ref].items()))
    lines.append(f"  spearman LGM vs RGB rewards: motion {a['spearman_motion']:.3f}, geo {a['spearman_geo']:.3f} "
                 f"({a['num_clips']} clips)")
    for kind, b in a.get("by_source", {}).items():
        lines.append(f"    {kind}: motion {b['spearman_motion']:.3f}, geo {b['spearman_geo']:.3f}, rotation LGM vs RGB "
                     f"{b['vs_rgb']['rot_deg']:.3f}° ({b['num_clips']} clips)")
    if "spearman_motion_vs_teacher" in a:
        lines.append(f"  spearman LGM vs teacher rewards: motion {a['spearman_motion_vs_teacher']:.3f}, "
                     f"geo {a['spearman_geo_vs_teacher']:.3f}")
    lines.append("robustness (drift vs own clean output, LGM / RGB):")
    lines.append(format_robustness(summary["robustness"]))
    return "\n".join(lines)
