"""Win rates of one checkpoint against another on a metric, paired by (prompt, seed), with bootstrap intervals.

For n pairs (a_i, b_i) of the same prompt and sampling seed, A wins pair i if it is better by more than `tie_tol`
(in the metric's own direction), loses if worse by more than `tie_tol`, and ties otherwise. The win rate counts a
tie as half a win: w = (wins + ½·ties) / n, so two identical checkpoints score exactly 0.5 and w(A, B) = 1 − w(B, A).
Pairs where either value is not finite (a failed Epi. video, r_geo = −inf) are left out and counted in
`dropped`: a failure is reported beside the rate rather than silently ranked.

The interval is a percentile bootstrap over pairs (resampling the n pairs with replacement `num_bootstrap` times,
seeded, so a report is reproducible). With n = 0 every field is NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class WinRate:
    rate: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int
    dropped: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def as_dict(self) -> dict[str, float]:
        return {"rate": self.rate, "low": self.low, "high": self.high, "wins": self.wins, "losses": self.losses,
                "ties": self.ties, "dropped": self.dropped, "n": self.n}


def outcomes(a: np.ndarray, b: np.ndarray, *, higher_is_better: bool, tie_tol: float = 0.0) -> np.ndarray:
    """Paired values a, b (n,) → per-pair score of A: 1 win, 0.5 tie, 0 loss; NaN where either is not finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"win rates need paired 1-D arrays of one length, got {a.shape} and {b.shape}")
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be ≥ 0, got {tie_tol}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = np.subtract(a, b, out=np.zeros_like(a), where=ok) * (1.0 if higher_is_better else -1.0)
    out = np.where(d > tie_tol, 1.0, np.where(d < -tie_tol, 0.0, 0.5))
    return np.where(ok, out, np.nan)


def win_rate(a: np.ndarray, b: np.ndarray, *, higher_is_better: bool, tie_tol: float = 0.0,
             num_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0) -> WinRate:
    """Win rate of A over B on paired values a, b (n,) with a `confidence` percentile-bootstrap interval."""
    if not 0 < confidence < 1 or num_bootstrap < 1:
        raise ValueError(f"need 0 < confidence < 1 and num_bootstrap ≥ 1, got {confidence}, {num_bootstrap}")
    o = outcomes(a, b, higher_is_better=higher_is_better, tie_tol=tie_tol)
    kept = o[np.isfinite(o)]
    dropped = int(o.size - kept.size)
    wins, losses = int(np.sum(kept == 1.0)), int(np.sum(kept == 0.0))
    ties = int(kept.size - wins - losses)
    if kept.size == 0:
        nan = float("nan")
        return WinRate(nan, nan, nan, 0, 0, 0, dropped)
    rng = np.random.default_rng(seed)
    boot = kept[rng.integers(0, kept.size, size=(num_bootstrap, kept.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    return WinRate(float(kept.mean()), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)),
                   wins, losses, ties, dropped)


def pair_by_key(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> tuple[np.ndarray, np.ndarray, list]:
    """Align two {key: value} maps (key = (prompt, seed)) → (a_vals, b_vals, keys) over the shared keys, sorted.

    Keys present in only one map are an error: a win rate over different prompt sets would compare unlike things.
    """
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if only_a or only_b:
        raise ValueError(f"win rates need the same (prompt, seed) keys on both sides; only in A: "
                         f"{sorted(map(str, only_a))[:3]}…({len(only_a)}), only in B: "
                         f"{sorted(map(str, only_b))[:3]}…({len(only_b)})")
    keys = sorted(a, key=str)
    return (np.asarray([a[k] for k in keys], np.float64), np.asarray([b[k] for k in keys], np.float64), keys)


def win_rates(a: Sequence[Mapping], b: Sequence[Mapping], directions: Mapping[str, bool], *,
              key: tuple[str, ...] = ("prompt", "seed"), **kwargs) -> dict[str, WinRate]:
    """Per-sample records of checkpoints A and B (dicts with the `key` fields and metric values) → {metric: WinRate}
    for each metric in `directions` (metric → higher_is_better)."""
    out = {}
    for metric, higher in directions.items():
        va = _by_key(a, key, metric, "A")
        vb = _by_key(b, key, metric, "B")
        xa, xb, _ = pair_by_key(va, vb)
        out[metric] = win_rate(xa, xb, higher_is_better=higher, **kwargs)
    return out


def _by_key(records: Sequence[Mapping], key: tuple[str, ...], metric: str, side: str) -> dict:
    out = {}
    for i, r in enumerate(records):
        missing = [k for k in (*key, metric) if k not in r]
        if missing:
            raise KeyError(f"record {i} of checkpoint {side} lacks {missing}")
        k = tuple(r[f] for f in key)
        if k in out:
            raise ValueError(f"checkpoint {side} has two records for {dict(zip(key, k))}")
        out[k] = float(r[metric])
    return out


__all__ = ["WinRate", "outcomes", "pair_by_key", "win_rate", "win_rates"]
