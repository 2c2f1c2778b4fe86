"""The stitching search: (ℓ̂, ψ) = argmin over candidate layers ℓ and connector variants of the held-out feature error.

For each variant (a ConnectorConfig: the paper's single conv, or deeper options) and each candidate ℓ, a fresh
connector S_ψ is fitted on the calibration cache by the relative feature MSE against Φ_{1:ℓ}(x) (the residual
stream entering block ℓ, plus the hook-0 features and the taps below ℓ that the heads need; align.py). Each fit is a
resumable `loop.fit` run with its own checkpoint directory, so an interrupted search continues where it stopped.
The score of (variant, ℓ) is its held-out error by the configured criterion; the untrained connector's error is
recorded too (the baseline of the learning check). The result is the whole curve, the argmin, and the fitted
connectors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.lgm.align import criterion, feature_errors, feature_loss
from vggrpo_jax.lgm.connector import Connector, ConnectorConfig, build_connector
from vggrpo_jax.lgm.data import TeacherCache, batch_fn
from vggrpo_jax.lgm.loop import fit
from vggrpo_jax.training import OptimConfig


def feature_keys(stitch_layer: int, tap_layers: Sequence[int]) -> dict[str, str]:
    """Connector target name → cache key for a connector at ℓ."""
    keys = {"tokens": f"tokens_l{stitch_layer}", "hook0": "hook0"}
    keys.update({f"tap{k}": f"tap{k}" for k in tap_layers if k < stitch_layer})
    return keys


def _targets(batch: Mapping[str, Any], keys: Mapping[str, str]) -> dict:
    return {name: batch[key] for name, key in keys.items()}


@dataclasses.dataclass(frozen=True)
class FeatureLoss:
    """Hashable loss of a connector fit (so equal fits share one compilation; see loop.fit)."""

    graphdef: Any
    keys: tuple[tuple[str, str], ...]
    variances: tuple[tuple[str, float], ...]
    weights: tuple[tuple[str, float], ...]

    def __call__(self, params, frozen, batch, rng):
        del frozen, rng
        out = nnx.merge(self.graphdef, params)(batch["latents"])
        return feature_loss(out, _targets(batch, dict(self.keys)), dict(self.variances), dict(self.weights))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _feature_errors(graphdef, variances, params, latents, targets):
    return feature_errors(nnx.merge(graphdef, params)(latents), targets, dict(variances))


def evaluate_connector(
    connector: Connector, cache: TeacherCache, variances: Mapping[str, float], batch_size: int = 4
) -> dict[str, float]:
    """Mean held-out relative errors {tokens, hook0, tap<k>} of a connector over every clip of `cache`."""
    keys = feature_keys(connector.stitch_layer, connector.tap_layers)
    var = tuple((name, float(variances[key])) for name, key in keys.items())
    graphdef, params = nnx.split(connector)
    totals: dict[str, float] = {}
    n = len(cache)
    for lo in range(0, n, batch_size):
        idx = range(lo, min(n, lo + batch_size))
        items = [cache.get(i, ["latents", *keys.values()]) for i in idx]
        batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
        e = _feature_errors(graphdef, var, params, batch["latents"], _targets(batch, keys))
        for k, v in e.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(items)
    return {k: v / n for k, v in totals.items()}


def fit_connector(
    connector: Connector,
    cache: TeacherCache,
    *,
    steps: int,
    batch_size: int,
    optim: OptimConfig,
    seed: int,
    weights: Mapping[str, float] | None = None,
    ckpt_dir: str | None = None,
    save_every: int = 100,
    log_every: int = 10,
    max_consecutive_skips: int = 10,
    writer: Any = None,
    name: str = "stitch",
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[Connector, Any]:
    """Fits S_ψ by the relative feature MSE (align.feature_loss) on every clip of `cache`. Returns (connector, FitResult)."""
    keys = feature_keys(connector.stitch_layer, connector.tap_layers)
    graphdef, params = nnx.split(connector)
    loss_fn = FeatureLoss(
        graphdef,
        tuple(keys.items()),
        tuple((name, float(cache.variances[key])) for name, key in keys.items()),
        tuple(sorted({"tokens": 1.0, "hook0": 1.0, "taps": 1.0, **dict(weights or {})}.items())),
    )
    result = fit(
        name=name, params=params, frozen=None, loss_fn=loss_fn,
        batch_fn=batch_fn(cache, ["latents", *keys.values()], batch_size, seed),
        optim=optim, total_steps=steps, rng=jax.random.key(seed), ckpt_dir=ckpt_dir,
        save_every=save_every, log_every=log_every, writer=writer, progress=progress, stop_after=stop_after,
        max_consecutive_skips=max_consecutive_skips,
    )
    return nnx.merge(graphdef, result.params), result


@dataclasses.dataclass
class StitchResult:
    """curve[variant][ℓ] = held-out errors after fitting (plus "criterion"); untrained[variant][ℓ] the same at init."""

    curve: dict[str, dict[int, dict[str, float]]]
    untrained: dict[str, dict[int, dict[str, float]]]
    best_variant: str
    best_layer: int
    connectors: dict[tuple[str, int], Connector]
    criterion: str

    @property
    def best(self) -> Connector:
        return self.connectors[(self.best_variant, self.best_layer)]

    def to_json(self) -> dict:
        return {
            "criterion": self.criterion,
            "best_variant": self.best_variant,
            "best_layer": self.best_layer,
            "curve": {v: {str(l): e for l, e in c.items()} for v, c in self.curve.items()},
            "untrained": {v: {str(l): e for l, e in c.items()} for v, c in self.untrained.items()},
        }


def stitching_search(
    *,
    train: TeacherCache,
    heldout: TeacherCache,
    variants: Mapping[str, ConnectorConfig],
    layers: Sequence[int],
    latent_channels: int,
    any4d_config: Any,
    steps: int,
    batch_size: int,
    optim: OptimConfig,
    seed: int,
    criterion_kind: str = "tokens",
    weights: Mapping[str, float] | None = None,
    workdir: str | None = None,
    save_every: int = 100,
    log_every: int = 10,
    max_consecutive_skips: int = 10,
    writer: Any = None,
    progress: bool = True,
) -> StitchResult:
    """Fits one connector per (variant, ℓ) and returns the held-out curve and its argmin (see module doc)."""
    if not layers:
        raise ValueError("stitching search: no candidate layers")
    if not variants:
        raise ValueError("stitching search: no connector variants")
    curve: dict[str, dict[int, dict[str, float]]] = {}
    untrained: dict[str, dict[int, dict[str, float]]] = {}
    connectors: dict[tuple[str, int], Connector] = {}
    # One normalisation for every score: the training set's feature variances.
    variances = train.variances
    for vname, vcfg in variants.items():
        curve[vname], untrained[vname] = {}, {}
        for l in sorted({int(x) for x in layers}):
            conn = build_connector(vcfg, latent_channels=latent_channels, any4d_config=any4d_config,
                                   stitch_layer=l, seed=seed)
            e0 = evaluate_connector(conn, heldout, variances, batch_size)
            e0["criterion"] = criterion(e0, criterion_kind, weights)
            untrained[vname][l] = e0
            ckpt = None if workdir is None else os.path.join(workdir, f"{vname}_l{l}")
            conn, _ = fit_connector(
                conn, train, steps=steps, batch_size=batch_size, optim=optim, seed=seed, weights=weights,
                ckpt_dir=ckpt, save_every=save_every, log_every=log_every, writer=writer, name=f"stitch/{vname}/l{l}",
                progress=progress, max_consecutive_skips=max_consecutive_skips,
            )
            e = evaluate_connector(conn, heldout, variances, batch_size)
            e["criterion"] = criterion(e, criterion_kind, weights)
            curve[vname][l] = e
            connectors[(vname, l)] = conn
            if writer is not None:  # the curve over layers: its "step" is the layer ℓ
                writer.write(l, {f"stitch_curve/{vname}": e["criterion"]})
    best_v, best_l = min(
        ((v, l) for v in curve for l in curve[v]), key=lambda vl: curve[vl[0]][vl[1]]["criterion"]
    )
    result = StitchResult(curve, untrained, best_v, best_l, connectors, criterion_kind)
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "curve.json"), "w") as f:
            json.dump(result.to_json(), f, indent=2)
    return result


def plot_curve(result: StitchResult, path: str) -> None:
    """Writes the held-out stitching curve (criterion vs ℓ per variant, untrained dashed, ℓ̂ marked) as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for vname, c in result.curve.items():
        ls = sorted(c)
        line, = ax.plot(ls, [c[l]["criterion"] for l in ls], marker="o", label=f"{vname} (fitted)")
        u = result.untrained[vname]
        ax.plot(ls, [u[l]["criterion"] for l in ls], ls="--", color=line.get_color(), alpha=0.5,
                label=f"{vname} (untrained)")
    best = result.curve[result.best_variant][result.best_layer]["criterion"]
    ax.scatter([result.best_layer], [best], s=150, facecolors="none", edgecolors="k", zorder=5,
               label=f"ℓ̂ = {result.best_layer} ({result.best_variant})")
    ax.set_xlabel("stitching layer ℓ (trunk blocks replaced)")
    ax.set_ylabel(f"held-out relative feature error ({result.criterion})")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "StitchResult",
    "evaluate_connector",
    "feature_keys",
    "fit_connector",
    "plot_curve",
    "stitching_search",
]
