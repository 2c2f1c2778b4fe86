"""Held-out metrics of a geometry model against toyworld's exact ground truth, and its reward fidelity.

On the RGB path's views (frames 0, 4, 8, 12, 16 of a 17-frame clip), per clip:
  rot_deg        mean over view pairs (i < j) of the angle between predicted and true relative rotations R_iᵀR_j
  tdir_deg       mean over view pairs of the angle between predicted and true relative translations R_iᵀ(c_j − c_i),
                 over pairs whose true baseline is ≥ `min_baseline` × the clip's median depth (a still camera — a
                 pan — has no translation direction); `tdir_pairs` counts them
  depth_absrel   mean |d̂ − d| / d of the metric z-depth over valid (non-sky) pixels (the model's own metric scale)
  depth_absrel_aligned   the same after scaling each clip's prediction by median(d / d̂) (shape only)
  flow_epe       mean ‖f̂ − f‖ (world units) of the scene flow on view 0's valid pixels, views 1..N−1
  flow_epe_dynamic   the same over the pixels of moving objects (clips with any)
  mask_acc       accuracy of the non-ambiguous mask (> ½) against "hits a surface"
Rewards: r_motion and r_geo (`vggrpo_jax.rewards`) from the prediction and from the ground truth; the report gives
their Spearman rank correlations over the clips (`spearman_motion`, `spearman_geo`).

The prediction's geometry for r_geo drops the pixels the model calls ambiguous (mask ≤ `mask_threshold`: sky),
as the ground truth has no depth there; `mask_threshold=None` keeps every pixel.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.geometry import SceneGeometry
from vggrpo_jax.geometry_model.data import GeometryCache, gather
from vggrpo_jax.geometry_model.targets import GeometryTargets, make_targets
from vggrpo_jax.lgm.correspondence import view_frame_indices
from vggrpo_jax.lgm.evaluate import rotation_error_deg, spearman
from vggrpo_jax.models.any4d import to_scene_geometry
from vggrpo_jax.rewards import motion_smoothness, reprojection_consistency

BARS = {"rot_deg": 2.0, "tdir_deg": 5.0, "depth_absrel": 0.05, "spearman_motion": 0.9, "spearman_geo": 0.9}


def _angle_deg(a: jax.Array, b: jax.Array) -> jax.Array:
    cross = jnp.linalg.norm(jnp.cross(a, b), axis=-1)
    return jnp.degrees(jnp.arctan2(cross, jnp.sum(a * b, -1)))


def relative_pose_errors(c2w: jax.Array, c2w_ref: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, N, 4, 4) poses → per pair i < j: rotation error (deg), translation-direction error (deg), true baseline.
    Each (B, N·(N−1)/2)."""
    n = c2w.shape[-3]
    i, j = np.triu_indices(n, 1)

    def rel(p):
        r, c = p[..., :3, :3], p[..., :3, 3]
        rij = jnp.swapaxes(r[:, i], -1, -2) @ r[:, j]
        tij = jnp.einsum("bpji,bpj->bpi", r[:, i], c[:, j] - c[:, i])
        return rij, tij

    rp, tp = rel(c2w)
    rg, tg = rel(c2w_ref)
    eye = jnp.zeros(rp.shape[:-2] + (4, 4)).at[..., 3, 3].set(1.0)
    rot = rotation_error_deg(eye.at[..., :3, :3].set(rp), eye.at[..., :3, :3].set(rg))
    return rot, _angle_deg(tp, tg), jnp.linalg.norm(tg, axis=-1)


def _masked_mean(x, m, axes):
    m = m.astype(jnp.float32)
    return jnp.sum(jnp.where(m > 0, x, 0.0), axes) / jnp.maximum(jnp.sum(m, axes), 1.0)


def prediction_geometry(out: Any, mask_threshold: float | None) -> SceneGeometry:
    """Any4DOutput → SceneGeometry, with depth 0 (invalid) where the model's mask ≤ `mask_threshold`."""
    g = to_scene_geometry(out)
    if mask_threshold is None:
        return g
    keep = out.mask > mask_threshold
    return g.replace(depth=jnp.where(keep, g.depth, 0.0), points=jnp.where(keep[..., None], g.points, 0.0))


def target_geometry(tgt: GeometryTargets) -> SceneGeometry:
    n = tgt.depth.shape[1]
    k = jnp.broadcast_to(tgt.intrinsics[:, None], (tgt.intrinsics.shape[0], n, 3, 3))
    return SceneGeometry(c2w=tgt.c2w, intrinsics=k, depth=tgt.depth_z, points=tgt.points, conf=None,
                         scene_flow=tgt.flow)


def clip_metrics(out: Any, tgt: GeometryTargets, min_baseline: float = 0.05) -> dict[str, jax.Array]:
    """Per-clip metrics (module doc) of an Any4DOutput against its targets: {name: (B,)}."""
    valid = tgt.valid
    med = jnp.nanmedian(jnp.where(valid, tgt.depth_z, jnp.nan).reshape(valid.shape[0], -1), axis=-1)
    rot, tdir, base = relative_pose_errors(out.c2w, tgt.c2w)
    tmask = base >= min_baseline * med[:, None]
    d = out.depth_z
    rel = jnp.abs(d - tgt.depth_z) / jnp.where(valid, tgt.depth_z, 1.0)
    ratio = jnp.nanmedian(jnp.where(valid, tgt.depth_z / jnp.maximum(d, 1e-6), jnp.nan).reshape(d.shape[0], -1), -1)
    rel_al = jnp.abs(d * ratio[:, None, None, None] - tgt.depth_z) / jnp.where(valid, tgt.depth_z, 1.0)
    epe = jnp.linalg.norm(out.scene_flow - tgt.flow, axis=-1)[:, 1:]  # (B, N−1, H, W)
    v0 = jnp.broadcast_to(valid[:, :1], epe.shape)
    dyn = jnp.broadcast_to(tgt.dynamic[:, None], epe.shape)
    return {
        "rot_deg": jnp.mean(rot, -1),
        "tdir_deg": _masked_mean(tdir, tmask, -1),
        "tdir_pairs": jnp.sum(tmask, -1).astype(jnp.float32),
        "depth_absrel": _masked_mean(rel, valid, (1, 2, 3)),
        "depth_absrel_aligned": _masked_mean(rel_al, valid, (1, 2, 3)),
        "flow_epe": _masked_mean(epe, v0, (1, 2, 3)),
        "flow_epe_dynamic": _masked_mean(epe, dyn, (1, 2, 3)),
        "has_dynamic": jnp.any(tgt.dynamic, (1, 2)).astype(jnp.float32),
        "mask_acc": jnp.mean(((out.mask > 0.5) == valid).astype(jnp.float32), (1, 2, 3)),
    }


def rewards(g: SceneGeometry, reward_kwargs: Mapping[str, Any]) -> dict[str, jax.Array]:
    m = motion_smoothness(g.c2w)
    return {"motion": m.reward, "geo": reprojection_consistency(g, **reward_kwargs).reward, "e_trans": m.e_trans,
            "e_rot": m.e_rot}


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _eval_batch(graphdef, params, batch, reward_items, mask_threshold, min_baseline):
    model = nnx.merge(graphdef, params)
    tgt = make_targets(**batch)
    out = model(tgt.images)
    kw = dict(reward_items)
    return (clip_metrics(out, tgt, min_baseline),
            rewards(prediction_geometry(out, mask_threshold), kw), rewards(target_geometry(tgt), kw))


def evaluate(model: nnx.Module, cache: GeometryCache, *, num_clips: int | None = None, batch_size: int = 8,
             frames: Sequence[int] | None = None, reward_kwargs: Mapping[str, Any] | None = None,
             mask_threshold: float | None = 0.5, min_baseline: float = 0.05) -> dict[str, Any]:
    """Runs `model` on the first `num_clips` clips of `cache` (all by default) at `frames` (the RGB path's views by
    default) → {"mean": {metric: mean over clips}, "spearman_motion", "spearman_geo", "per_clip": {name: (M,)},
    "num_clips"}. `reward_kwargs` go to `reprojection_consistency`."""
    m = len(cache) if num_clips is None else int(num_clips)
    if not 1 <= m <= len(cache):
        raise ValueError(f"evaluate: num_clips={num_clips} but the cache has {len(cache)} clips")
    if frames is None:
        frames = view_frame_indices(1 + (cache.num_frames - 1) // 4, 4, "last")
    frames = np.asarray(frames, np.int64)
    graphdef, params = nnx.split(model)
    items = tuple(sorted(dict(reward_kwargs or {}).items()))
    rows: dict[str, list] = {}
    for lo in range(0, m, batch_size):
        idx = np.arange(lo, lo + batch_size) % m  # a full last batch (one compile); duplicates dropped below
        batch = gather(cache, idx, np.broadcast_to(frames, (len(idx), len(frames))))
        metrics, pred_r, gt_r = jax.device_get(_eval_batch(graphdef, params, batch, items, mask_threshold,
                                                           float(min_baseline)))
        keep = slice(0, min(batch_size, m - lo))
        for k, v in metrics.items():
            rows.setdefault(k, []).append(v[keep])
        for k, v in pred_r.items():
            rows.setdefault(f"pred_{k}", []).append(v[keep])
        for k, v in gt_r.items():
            rows.setdefault(f"gt_{k}", []).append(v[keep])
    per_clip = {k: np.concatenate(v) for k, v in rows.items()}
    per_clip["jitter"] = np.asarray(cache.jitter[:m], np.float32)
    per_clip["seed"] = np.asarray(cache.seed[:m])
    dyn = per_clip["has_dynamic"] > 0
    mean = {k: float(np.mean(v)) for k, v in per_clip.items()
            if k not in ("flow_epe_dynamic", "has_dynamic", "jitter", "seed") and not k.startswith(("pred_", "gt_"))}
    mean["flow_epe_dynamic"] = float(np.mean(per_clip["flow_epe_dynamic"][dyn])) if dyn.any() else float("nan")
    mean["rot_deg_median"] = float(np.median(per_clip["rot_deg"]))
    mean["tdir_deg_median"] = float(np.median(per_clip["tdir_deg"]))
    for k in ("motion", "geo"):
        mean[f"pred_{k}_finite"] = float(np.mean(np.isfinite(per_clip[f"pred_{k}"])))
    mean["motion_order_smooth_vs_jittered"] = smooth_vs_jittered_order(per_clip["pred_motion"], per_clip["jitter"])
    return {
        "num_clips": m,
        "mean": mean,
        "spearman_motion": spearman(per_clip["pred_motion"], per_clip["gt_motion"]),
        "spearman_geo": spearman(per_clip["pred_geo"], per_clip["gt_geo"]),
        "per_clip": per_clip,
    }


def smooth_vs_jittered_order(reward: np.ndarray, jitter: np.ndarray) -> float:
    """Fraction of (smooth, jittered) clip pairs in which the smooth clip has the higher reward (AUC; 0.5 = chance,
    NaN without both kinds)."""
    smooth, shaky = reward[jitter == 0], reward[jitter > 0]
    if not len(smooth) or not len(shaky):
        return float("nan")
    diff = smooth[:, None] - shaky[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def bars_met(report: Mapping[str, Any]) -> dict[str, bool]:
    """{metric: value meets its bar} for `BARS` (errors ≤ bar, Spearman ≥ bar)."""
    out = {}
    for k, bar in BARS.items():
        v = report[k] if k.startswith("spearman") else report["mean"][k]
        out[k] = bool(v >= bar) if k.startswith("spearman") else bool(v <= bar)
    return out


def format_report(report: Mapping[str, Any]) -> str:
    m = report["mean"]
    met = bars_met(report)
    flag = lambda k: "ok" if met[k] else "MISSED"
    return "\n".join([
        f"held-out clips: {report['num_clips']}",
        f"  rotation error      {m['rot_deg']:.3f}° mean, {m['rot_deg_median']:.3f}° median  (bar ≤ 2°: {flag('rot_deg')})",
        f"  translation dir.    {m['tdir_deg']:.3f}° mean, {m['tdir_deg_median']:.3f}° median over "
        f"{m['tdir_pairs']:.1f} pairs/clip  (bar ≤ 5°: {flag('tdir_deg')})",
        f"  depth AbsRel        {m['depth_absrel']:.4f} metric, {m['depth_absrel_aligned']:.4f} median-aligned  "
        f"(bar ≤ 0.05: {flag('depth_absrel')})",
        f"  scene-flow EPE      {m['flow_epe']:.4f} all view-0 pixels, {m['flow_epe_dynamic']:.4f} moving pixels",
        f"  mask accuracy       {m['mask_acc']:.4f}",
        f"  r_motion ranks smooth above jittered clips in {m['motion_order_smooth_vs_jittered']:.1%} of pairs",
        f"  Spearman r_motion   {report['spearman_motion']:.3f}  (bar ≥ 0.9: {flag('spearman_motion')})",
        f"  Spearman r_geo      {report['spearman_geo']:.3f}  (bar ≥ 0.9: {flag('spearman_geo')}); finite r_geo "
        f"{m['pred_geo_finite']:.2%}",
    ])


__all__ = ["BARS", "bars_met", "clip_metrics", "evaluate", "format_report", "heldout_report", "prediction_geometry",
           "relative_pose_errors", "target_geometry"]


def heldout_report(model: nnx.Module, num_clips: int, *, image_size: int = 56, source: str = "render",
                   data_dir: str | None = None, data_config: str = "zoo", cache_path: str | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """`evaluate` on the first `num_clips` held-out toyworld clips (seed order), read (`source="tfds"`) or
    rendered (`"render"`, the same clips) and cached at `cache_path` if given. `kwargs` go to `evaluate`."""
    from vggrpo_jax.geometry_model.data import build_cache, cached  # noqa: PLC0415
    from vggrpo_jax.data.toyworld_clips import load_split  # noqa: PLC0415

    hw = (int(image_size), int(image_size))
    if cache_path:
        cache = cached(cache_path, "heldout", num_clips, hw, source=source, data_dir=data_dir, data_config=data_config)
    else:
        cache = build_cache(load_split("heldout", num_clips, source=source, data_dir=data_dir,
                                       data_config=data_config), hw, data_config)
    return evaluate(model, cache, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """python -m vggrpo_jax.geometry_model.evaluate --model_dir=DIR [--num_clips=128] [--source=render|tfds]"""
    import argparse  # noqa: PLC0415

    from vggrpo_jax.geometry_model.export import load_model, read_manifest  # noqa: PLC0415

    p = argparse.ArgumentParser(description="Held-out metrics of a shipped toy geometry model.")
    p.add_argument("--model_dir", required=True, help="directory with model.safetensors + manifest.json")
    p.add_argument("--num_clips", type=int, default=128)
    p.add_argument("--source", default="render", choices=("render", "tfds"))
    p.add_argument("--data_dir", default=None)
    p.add_argument("--batch_size", type=int, default=8)
    a = p.parse_args(argv)
    manifest = read_manifest(a.model_dir)
    ev = manifest["config"]["eval"]
    report = heldout_report(load_model(a.model_dir), a.num_clips, image_size=manifest["data"]["image_size"],
                            source=a.source, data_dir=a.data_dir, batch_size=a.batch_size,
                            reward_kwargs=ev["reward"],
                            mask_threshold=ev["mask_threshold"] if ev["mask_threshold"] >= 0 else None,
                            min_baseline=ev["min_baseline"])
    print(format_report(report))


if __name__ == "__main__":
    main()
