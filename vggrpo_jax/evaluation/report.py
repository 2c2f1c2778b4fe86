"""Per-sample evaluation records → per-split means with standard errors, win rates, `report.json` + `report.md`.

A record is one generated video: {"prompt": str, "seed": int, "split": "static" | "dynamic" | …, metric: float…}.
`METRICS` names each metric the report knows and its direction (True: higher is better, False: lower is better,
None: descriptive — shown, never ranked). Means and standard errors (std with ddof 1 / √n) are over the finite
values; the count of non-finite values (failed Epi., r_geo = −inf) is reported beside them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

from vggrpo_jax.evaluation.winrate import win_rates

METRICS: dict[str, bool | None] = {
    "epi_sampson": False,  # px, mean Sampson distance of SIFT matches (Epi.)
    "epi_inlier_rate": True,
    "epi_failed": None,  # 1 where no frame pair had ≥ min_matches matches
    "motion_smoothness": True,  # VBench-style, flow-interpolation proxy
    "dynamic_degree": None,  # VBench-style 0/1, RAFT replaced by Farnebäck
    "flow_magnitude": None,
    "rgb_motion": True,  # r_motion of the RGB path (decode → geometry model)
    "rgb_e_trans": False,
    "rgb_e_rot": False,
    "rgb_geo": True,  # r_geo = −(top-k mean reprojection error) of the RGB path
    "latent_motion": True,  # the LGM rewards
    "latent_geo": True,
    "latent_e_trans": False,
    "latent_e_rot": False,
    "frame_smoothness": True,  # pixel-space analogue of e_trans (evaluation.scores.frame_smoothness)
    "vae_roundtrip_psnr": None,  # dB: how well the VAE reproduces the decoded video (the manifold check)
    "frame_difference": None,  # mean |f_{t+1} − f_t| in [−1, 1] units: how much the video moves
    "saturation": None,  # mean (max − min over RGB) per pixel: how much of the frame is coloured objects
}


def summarize(records: Sequence[Mapping], metrics: Sequence[str] | None = None) -> dict[str, dict[str, dict]]:
    """{split: {metric: {mean, sem, n, nonfinite}}} for "all" and each split present in the records."""
    if not records:
        raise ValueError("no records to summarize")
    metrics = list(metrics) if metrics is not None else [m for m in METRICS if m in records[0]]
    splits = ["all"] + sorted({str(r["split"]) for r in records})
    out = {}
    for split in splits:
        rows = [r for r in records if split == "all" or str(r["split"]) == split]
        out[split] = {}
        for m in metrics:
            x = np.asarray([float(r[m]) for r in rows], np.float64)
            f = x[np.isfinite(x)]
            sem = float(np.std(f, ddof=1) / math.sqrt(f.size)) if f.size > 1 else float("nan")
            out[split][m] = {"mean": float(f.mean()) if f.size else float("nan"), "sem": sem, "n": int(f.size),
                             "nonfinite": int(x.size - f.size)}
    return out


def compare(checkpoints: Mapping[str, Sequence[Mapping]], baseline: str, *, metrics: Sequence[str] | None = None,
            split: str | None = None, **win_rate_kwargs) -> dict[str, dict[str, dict]]:
    """{checkpoint: {metric: win-rate dict}} of every checkpoint against `baseline` on the ranked metrics, paired by
    (prompt, seed); `split` restricts both sides to that split."""
    if baseline not in checkpoints:
        raise KeyError(f"baseline {baseline!r} is not among the checkpoints {sorted(checkpoints)}")
    pick = lambda rs: [r for r in rs if split is None or str(r["split"]) == split]  # noqa: E731
    base = pick(checkpoints[baseline])
    names = metrics if metrics is not None else [m for m in METRICS if base and m in base[0]]
    directions = {m: METRICS[m] for m in names if METRICS.get(m) is not None}
    return {
        name: {m: w.as_dict() for m, w in win_rates(pick(rs), base, directions, **win_rate_kwargs).items()}
        for name, rs in checkpoints.items() if name != baseline
    }


def _fmt(x: float, digits: int = 4) -> str:
    return "—" if not np.isfinite(x) else f"{x:.{digits}g}"


def to_markdown(summary: Mapping[str, Mapping], wins: Mapping[str, Mapping] | None, baseline: str | None) -> str:
    """summary: {checkpoint: summarize(...)}; wins: {split: compare(...)} → a markdown report."""
    lines = ["# Evaluation report", ""]
    ckpts = list(summary)
    splits = list(next(iter(summary.values())))
    for split in splits:
        metrics = list(summary[ckpts[0]][split])
        arrows = {m: {True: " ↑", False: " ↓", None: ""}[METRICS.get(m)] for m in metrics}
        lines += [f"## {split} (mean ± s.e.)", "", "| checkpoint | " + " | ".join(m + arrows[m] for m in metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for c in ckpts:
            cells = []
            for m in metrics:
                s = summary[c][split][m]
                cell = f"{_fmt(s['mean'])} ± {_fmt(s['sem'], 2)}"
                cells.append(cell + (f" ({s['nonfinite']} failed)" if s["nonfinite"] else ""))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
        if wins and split in wins and wins[split]:
            lines += [f"### {split}: win rate against {baseline} [95% bootstrap CI] (wins/ties/losses)", ""]
            for c, per in wins[split].items():
                items = [f"{m}: {_fmt(w['rate'], 3)} [{_fmt(w['low'], 3)}, {_fmt(w['high'], 3)}] "
                         f"({w['wins']}/{w['ties']}/{w['losses']}" + (f", {w['dropped']} dropped)" if w["dropped"]
                                                                      else ")")
                         for m, w in per.items()]
                lines.append(f"- **{c}**: " + "; ".join(items))
            lines.append("")
    return "\n".join(lines)


def write_report(out_dir: str, checkpoints: Mapping[str, Sequence[Mapping]], baseline: str | None = None,
                 **win_rate_kwargs) -> dict:
    """Writes `out_dir/report.json` (records, summaries, win rates) and `out_dir/report.md`; returns the json dict.

    checkpoints: {name: per-sample records}; with `baseline` (one of the names) and ≥ 2 checkpoints the win rates
    of the others against it are computed for "all" and each split.
    """
    if not checkpoints:
        raise ValueError("write_report needs at least one checkpoint's records")
    summary = {name: summarize(rs) for name, rs in checkpoints.items()}
    wins = None
    if baseline is not None and len(checkpoints) > 1:
        splits = next(iter(summary.values())).keys()
        wins = {s: compare(checkpoints, baseline, split=None if s == "all" else s, **win_rate_kwargs) for s in splits}
    report = {"baseline": baseline, "summary": summary, "win_rates": wins,
              "records": {k: [dict(r) for r in v] for k, v in checkpoints.items()}}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=_json_default, allow_nan=True)
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write(to_markdown(summary, wins, baseline) + "\n")
    return report


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x)}")


__all__ = ["METRICS", "compare", "summarize", "to_markdown", "write_report"]
