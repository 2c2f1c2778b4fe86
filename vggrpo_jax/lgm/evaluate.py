"""LGM evaluation: agreement with the RGB teacher, and robustness to latent perturbations.

Agreement (held-out clips; reference = the RGB path on the decoded latents, i.e. the reward the LGM replaces, and,
when the cache holds them, the teacher on the original frames):
  rot_deg       mean over views of the geodesic angle between predicted and reference camera rotations (degrees)
  trans         mean over views of ‖t − t_ref‖ (camera centres, reference units)
  trans_rel     Σ‖t − t_ref‖ / Σ‖t_ref − t_ref,0‖ (error relative to the reference trajectory's extent)
  depth_absrel  mean over valid reference pixels of |d − d_ref| / d_ref (z-depth)
  spearman_motion / spearman_geo: Spearman rank correlation over clips between the latent and the RGB rewards
Robustness (the paper's claim): latents z + σ·ε for growing σ; the drift of each path is its agreement metrics
against its OWN clean output (LGM(z+σε) vs LGM(z); RGB(z+σε) vs RGB(z)), reported side by side with their ratio.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.geometry import SceneGeometry
from vggrpo_jax.rewards import RewardOptions, geometry_rewards

METRICS = ("rot_deg", "trans", "trans_rel", "depth_absrel")


# ------------------------------------------------------------------------------------------------ metrics
def rotation_error_deg(c2w: jax.Array, c2w_ref: jax.Array) -> jax.Array:
    """Geodesic angle (degrees) between the rotations of (..., 4, 4) poses, shape (...)."""
    r = jnp.einsum("...ji,...jk->...ik", c2w[..., :3, :3], c2w_ref[..., :3, :3])
    # atan2(sin, cos) instead of arccos: accurate near 0 (arccos(1 − ε) has an O(√ε) error).
    cos = (jnp.trace(r, axis1=-2, axis2=-1) - 1.0) * 0.5
    vee = jnp.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = 0.5 * jnp.linalg.norm(vee, axis=-1)
    return jnp.degrees(jnp.arctan2(sin, cos))


def translation_error(c2w: jax.Array, c2w_ref: jax.Array) -> jax.Array:
    """‖t − t_ref‖ of (..., 4, 4) poses, shape (...)."""
    return jnp.linalg.norm(c2w[..., :3, 3] - c2w_ref[..., :3, 3], axis=-1)


def depth_absrel(depth: jax.Array, depth_ref: jax.Array) -> jax.Array:
    """Mean |d − d_ref| / d_ref over pixels where both are finite and d_ref > 0; (..., N, H, W) → (...)."""
    valid = jnp.isfinite(depth_ref) & (depth_ref > 0) & jnp.isfinite(depth)
    rel = jnp.where(valid, jnp.abs(depth - depth_ref) / jnp.where(valid, depth_ref, 1.0), 0.0)
    count = jnp.sum(valid, axis=(-3, -2, -1))
    return jnp.sum(rel, axis=(-3, -2, -1)) / jnp.maximum(count, 1)


def geometry_agreement(pred: SceneGeometry, ref: SceneGeometry) -> dict[str, jax.Array]:
    """Per-clip agreement metrics (see module doc) of batched geometries (B, N, ...): {metric: (B,)}."""
    if pred.depth.shape != ref.depth.shape:
        raise ValueError(f"agreement: geometries differ in shape, depth {pred.depth.shape} vs {ref.depth.shape}")
    t_err = translation_error(pred.c2w, ref.c2w)  # (B, N)
    extent = jnp.linalg.norm(ref.c2w[..., :3, 3] - ref.c2w[..., :1, :3, 3], axis=-1)
    return {
        "rot_deg": jnp.mean(rotation_error_deg(pred.c2w, ref.c2w), axis=-1),
        "trans": jnp.mean(t_err, axis=-1),
        "trans_rel": jnp.sum(t_err, axis=-1) / jnp.maximum(jnp.sum(extent, axis=-1), 1e-8),
        "depth_absrel": depth_absrel(pred.depth, ref.depth),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks). NaN when either side is constant, has a NaN, or n < 2.

    ±inf ranks like any other value: a failed reward (−inf, e.g. r_geo of a clip where no view sees another's points)
    is the lowest, as group_advantages treats it."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman: {a.shape} vs {b.shape}")
    if len(a) < 2 or np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# ------------------------------------------------------------------------------------------------ runners
@functools.partial(jax.jit, static_argnums=0)
def _call_module(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def jit_module(module: nnx.Module) -> Callable[[jax.Array], Any]:
    """A jitted `module(x)` with the module's state as a traced argument (not baked-in constants); modules of the
    same structure share one compilation."""
    graphdef, state = nnx.split(module)
    return lambda x: _call_module(graphdef, state, x)


def make_reward_fn(
    options: RewardOptions | Mapping[str, Any] | None = None,
) -> Callable[[SceneGeometry], dict[str, jax.Array]]:
    """SceneGeometry (B, ...) → {"motion": (B,), "geo": (B,)}, jitted: rewards.geometry_rewards with `options` (a
    RewardOptions, or a mapping of its fields such as the LGM config's eval.reward block)."""
    if options is None or isinstance(options, Mapping):
        options = RewardOptions.from_config(options or {}, where="eval.reward")

    @jax.jit
    def rewards(g):
        out = geometry_rewards(g, options)
        return {"motion": out["motion"], "geo": out["geo"]}

    return rewards


def _mean(rows: list[dict[str, np.ndarray]]) -> dict[str, float]:
    keys = rows[0].keys()
    return {k: float(np.mean(np.concatenate([np.atleast_1d(r[k]) for r in rows]))) for k in keys}


def agreement_report(
    lgm_fn: Callable[[jax.Array], SceneGeometry],
    rgb_fn: Callable[[jax.Array], SceneGeometry],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    reward_fn: Callable[[SceneGeometry], Mapping[str, jax.Array]] | None = None,
    teacher_fn: Callable[[Mapping[str, np.ndarray]], SceneGeometry] | None = None,
) -> dict[str, Any]:
    """Agreement of the LGM with the RGB path (and with the teacher on the original frames, via teacher_fn).

    batches: dicts with "latents" (B, C, F', H', W') (and whatever teacher_fn reads). Returns
    {"vs_rgb": {metric: mean}, "vs_teacher": {...} (if teacher_fn), "spearman_motion", "spearman_geo" (LGM vs RGB
     rewards), "spearman_{motion,geo}_vs_teacher" (if teacher_fn), "rewards": {"lgm_motion": [...], "rgb_motion",
     "lgm_geo", "rgb_geo", and "teacher_motion", "teacher_geo" if teacher_fn}, "num_clips"}.
    """
    reward_fn = reward_fn or make_reward_fn()
    vs_rgb, vs_teacher, rgb_vs_teacher = [], [], []
    paths = ("lgm", "rgb", "teacher") if teacher_fn is not None else ("lgm", "rgb")
    rewards: dict[str, list] = {f"{p}_{name}": [] for p in paths for name in ("motion", "geo")}
    for batch in batches:
        z = jnp.asarray(batch["latents"])
        geometries = {"lgm": lgm_fn(z), "rgb": rgb_fn(z)}
        g_lgm, g_rgb = geometries["lgm"], geometries["rgb"]
        vs_rgb.append(jax.device_get(geometry_agreement(g_lgm, g_rgb)))
        if teacher_fn is not None:
            geometries["teacher"] = g_t = teacher_fn(batch)
            vs_teacher.append(jax.device_get(geometry_agreement(g_lgm, g_t)))
            rgb_vs_teacher.append(jax.device_get(geometry_agreement(g_rgb, g_t)))
        for p, g in geometries.items():
            r = jax.device_get(reward_fn(g))
            for name in ("motion", "geo"):
                rewards[f"{p}_{name}"].extend(np.asarray(r[name]).tolist())
    if not vs_rgb:
        raise ValueError("agreement_report: no batches")
    report: dict[str, Any] = {"vs_rgb": _mean(vs_rgb), "num_clips": len(rewards["lgm_motion"])}
    if teacher_fn is not None:
        report["vs_teacher"] = _mean(vs_teacher)
        report["rgb_vs_teacher"] = _mean(rgb_vs_teacher)
    report["spearman_motion"] = spearman(rewards["lgm_motion"], rewards["rgb_motion"])
    report["spearman_geo"] = spearman(rewards["lgm_geo"], rewards["rgb_geo"])
    if teacher_fn is not None:  # the same against the teacher on the original frames
        report["spearman_motion_vs_teacher"] = spearman(rewards["lgm_motion"], rewards["teacher_motion"])
        report["spearman_geo_vs_teacher"] = spearman(rewards["lgm_geo"], rewards["teacher_geo"])
    report["rewards"] = rewards
    return report


def robustness_report(
    lgm_fn: Callable[[jax.Array], SceneGeometry],
    rgb_fn: Callable[[jax.Array], SceneGeometry],
    latents: jax.Array,
    sigmas: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 4,
) -> list[dict[str, Any]]:
    """Drift of each path under latent noise σ (see module doc): [{"sigma", "lgm": {metric}, "rgb": {metric},
    "ratio": {metric: lgm / rgb}}] in the order of `sigmas`. The same noise draw ε is used for both paths."""
    latents = jnp.asarray(latents)
    noise = jax.random.normal(jax.random.key(seed), latents.shape, latents.dtype)
    n = latents.shape[0]
    clean_lgm = [lgm_fn(latents[i:i + batch_size]) for i in range(0, n, batch_size)]
    clean_rgb = [rgb_fn(latents[i:i + batch_size]) for i in range(0, n, batch_size)]
    rows = []
    for sigma in sigmas:
        z = latents + float(sigma) * noise
        d_lgm, d_rgb = [], []
        for j, i in enumerate(range(0, n, batch_size)):
            d_lgm.append(jax.device_get(geometry_agreement(lgm_fn(z[i:i + batch_size]), clean_lgm[j])))
            d_rgb.append(jax.device_get(geometry_agreement(rgb_fn(z[i:i + batch_size]), clean_rgb[j])))
        m_lgm, m_rgb = _mean(d_lgm), _mean(d_rgb)
        ratio = {k: (m_lgm[k] / m_rgb[k] if m_rgb[k] > 0 else float("nan")) for k in METRICS}
        rows.append({"sigma": float(sigma), "lgm": m_lgm, "rgb": m_rgb, "ratio": ratio})
    return rows


def format_robustness(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of robustness_report rows."""
    head = f"{'sigma':>6} | " + " | ".join(f"{m + ' lgm/rgb':>26}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " | ".join(f"{r['lgm'][m]:>10.4g} / {r['rgb'][m]:<10.4g}  " for m in METRICS)
        lines.append(f"{r['sigma']:>6.3g} | {cells}")
    return "\n".join(lines)


__all__ = [
    "METRICS",
    "agreement_report",
    "depth_absrel",
    "format_robustness",
    "geometry_agreement",
    "jit_module",
    "make_reward_fn",
    "robustness_report",
    "rotation_error_deg",
    "spearman",
    "translation_error",
]
