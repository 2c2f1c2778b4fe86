"""The two LGM objectives: feature alignment (stitching) and output alignment (fine-tuning).

Stitching (the paper's argmin over ℓ and ψ): mean squared error between the connector's features and the teacher's
Φ_{1:ℓ}(x). Raw MSE is not comparable across layers (the residual stream grows with depth), so every feature is
scored as its *fraction of unexplained variance*

    rel(f) = mean((S_ψ(E(x)) − f)²) / var(f),     var(f) = mean over channels of the per-channel variance of f

(var from the calibration set; 1.0 = predicting each channel's mean). The features are the residual stream entering
block ℓ ("tokens"), the hook-0 encoder features ("hook0") and the trunk taps below ℓ ("tap{k}"); the search criterion
is rel(tokens) by default (exactly the paper's Φ_{1:ℓ}), or the weighted mean over all supplied features.

Alignment: L_align = Σ_j λ_j · mean |Φ̂_ψ,j(E(x)) − Φ_j(x)| over the output modalities j:
  translation  cam_trans (B, N, 3)     camera-to-world translation, world = view 0
  rotation     cam_quats (B, N, 4)     xyzw; sign-invariant: min(|q − q*|₁, |q + q*|₁) per view (q ≡ −q)
  depth        depth_z   (B, N, H, W)  z-depth
  points       pts3d     (B, N, H, W, 3) world points
  scene_flow   scene_flow (B, N, H, W, 3)
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

MODALITIES: dict[str, str] = {
    "translation": "cam_trans",
    "rotation": "cam_quats",
    "depth": "depth_z",
    "points": "pts3d",
    "scene_flow": "scene_flow",
}
FEATURE_CRITERIA = ("tokens", "all")


def relative_mse(pred: jax.Array, target: jax.Array, variance: jax.Array | float) -> jax.Array:
    """mean((pred − target)²) / variance, in fp32. Shapes must match exactly."""
    if pred.shape != target.shape:
        raise ValueError(f"feature shapes differ: prediction {pred.shape} vs teacher {target.shape}")
    d = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(d * d) / jnp.maximum(jnp.asarray(variance, jnp.float32), 1e-12)


def feature_errors(out: Any, target: Mapping[str, Any], variances: Mapping[str, float]) -> dict[str, jax.Array]:
    """Per-feature relative errors of a ConnectorOutput against teacher features.

    target: {"tokens": (B, N·T+1, D), "hook0": (B, N, T, D_enc), "tap{k}": tap k for each k the connector supplies}.
    variances: the same keys → scalar variance from the calibration set.
    """
    errs = {"tokens": relative_mse(out.tokens, target["tokens"], variances["tokens"]),
            "hook0": relative_mse(out.hook0, target["hook0"], variances["hook0"])}
    for k, tap in out.taps.items():
        key = f"tap{k}"
        if key not in target:
            raise KeyError(f"teacher features lack {key!r} (connector supplies taps {sorted(out.taps)})")
        errs[key] = relative_mse(tap.reshape(target[key].shape), target[key], variances[key])
    return errs


def feature_loss(
    out: Any,
    target: Mapping[str, Any],
    variances: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean of the relative feature errors (weights keys: tokens, hook0, taps; default 1 each)."""
    w = {"tokens": 1.0, "hook0": 1.0, "taps": 1.0, **dict(weights or {})}
    errs = feature_errors(out, target, variances)
    total, norm = 0.0, 0.0
    for key, e in errs.items():
        wk = w["taps"] if key.startswith("tap") else w[key]
        total = total + wk * e
        norm += wk
    return total / max(norm, 1e-12), errs


def criterion(errs: Mapping[str, Any], kind: str = "tokens", weights: Mapping[str, float] | None = None) -> float:
    """The stitching-search score of one (ℓ, ψ) from its held-out relative errors."""
    if kind not in FEATURE_CRITERIA:
        raise ValueError(f"stitch criterion {kind!r} is not one of {FEATURE_CRITERIA}")
    if kind == "tokens":
        return float(errs["tokens"])
    w = {"tokens": 1.0, "hook0": 1.0, "taps": 1.0, **dict(weights or {})}
    num = sum((w["taps"] if k.startswith("tap") else w[k]) * float(v) for k, v in errs.items())
    den = sum((w["taps"] if k.startswith("tap") else w[k]) for k in errs)
    return num / den


def _get(outputs: Any, field: str) -> jax.Array:
    value = outputs[field] if isinstance(outputs, Mapping) else getattr(outputs, field, None)
    if value is None:
        raise KeyError(f"geometry outputs lack {field!r}")
    return value


def quaternion_l1(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over views of min(|q − q*|₁, |q + q*|₁): L1 that treats q and −q as the same rotation. (…, 4) inputs."""
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    plus = jnp.sum(jnp.abs(pred - target), axis=-1)
    minus = jnp.sum(jnp.abs(pred + target), axis=-1)
    return jnp.mean(jnp.minimum(plus, minus))


def alignment_loss(
    pred: Any, target: Any, weights: Mapping[str, float]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_align = Σ_j λ_j · L1_j. `pred`/`target`: Any4DOutput or dicts keyed by Any4DOutput field names.

    weights: modality name (see MODALITIES) → λ_j; modalities with λ = 0 are skipped. Unknown names raise.
    """
    unknown = set(weights) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown alignment modalities {sorted(unknown)}; known: {sorted(MODALITIES)}")
    total = jnp.zeros((), jnp.float32)
    parts: dict[str, jax.Array] = {}
    for name, lam in weights.items():
        if not lam:
            continue
        field = MODALITIES[name]
        p, t = _get(pred, field), _get(target, field)
        if p.shape != t.shape:
            raise ValueError(f"alignment {name}: prediction {field} {p.shape} vs teacher {t.shape}")
        if name == "rotation":
            err = quaternion_l1(p, t)
        else:
            err = jnp.mean(jnp.abs(p.astype(jnp.float32) - t.astype(jnp.float32)))
        parts[name] = err
        total = total + float(lam) * err
    if not parts:
        raise ValueError("alignment loss: every modality weight is zero")
    return total, parts


__all__ = [
    "FEATURE_CRITERIA",
    "MODALITIES",
    "alignment_loss",
    "criterion",
    "feature_errors",
    "feature_loss",
    "quaternion_l1",
    "relative_mse",
]
