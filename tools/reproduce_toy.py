#!/usr/bin/env python
"""Issue 13's items 1–4 on the trained toy world at full size, as tables (DIR/tables.md + DIR/tables.json).

    python tools/reproduce_toy.py --out=DIR [--iterations=100] [--seeds=0,1,2] [--eval_prompts=64]
                                  [--num_samples=512] [--stages=samples,lgm,grpo,cost]

Stages (each a subprocess with its own log under DIR/logs; every one resumes where it stopped, so the same command
continues an interrupted reproduction and a finished stage is not run again):

    samples  base-DiT samples, the LGM's generated calibration clips (tools/base_samples.py → DIR/base_samples)
    lgm      the LGM on real clips + those samples (train_lgm, configs/lgm_zoo.py → DIR/lgm): agreement per source
    grpo     GRPO on configs/toy.py with that LGM, r_motion alone and r_motion + r_geo, one run per seed
             (DIR/grpo/<arm>/seed<S>); each run ends with its report (base against the EMA adapters on the held-out
             prompts, the same noise): the gain table (item 2) and Table 2b in miniature (item 3)
    cost     benchmarks/reward_cost.py: latent against RGB reward time and memory, with the AOT figures (item 4)

The tables are written from whatever stages have finished, so `--stages=` (none) only rewrites them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Mapping, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ARMS = {"motion": {"motion": 1.0, "geo": 0.0}, "motion+geo": {"motion": 1.0, "geo": 1.0}}
STAGES = ("samples", "lgm", "grpo", "cost")
# issue 13's bars for the LGM (item 1), per calibration source
LGM_BARS = {"spearman_motion": (">=", 0.8), "spearman_geo": (">=", 0.7), "rot_deg": ("<=", 3.0)}
# (metric, higher is better) in the gain and Table 2b tables; rgb_geo is −(reprojection error), the RGB path's r_geo
GAIN_METRICS = [("rgb_motion", True), ("rgb_e_trans", False), ("rgb_e_rot", False), ("rgb_geo", True),
                ("latent_motion", True), ("latent_geo", True), ("frame_smoothness", True), ("epi_sampson", False),
                ("vae_roundtrip_psnr", None), ("frame_difference", None)]


# ------------------------------------------------------------------------------------------------ statistics
def paired(base: Sequence[Mapping], trained: Sequence[Mapping], metric: str) -> dict:
    """Mean of trained − base over the (prompt, seed) pairs where both are finite, its s.e., and both means."""
    key = lambda r: (r["prompt"], int(r["seed"]))  # noqa: E731
    b = {key(r): float(r[metric]) for r in base if metric in r}
    t = {key(r): float(r[metric]) for r in trained if metric in r}
    pairs = [(b[k], t[k]) for k in b if k in t and math.isfinite(b[k]) and math.isfinite(t[k])]
    if not pairs:
        return {"n": 0, "base": float("nan"), "trained": float("nan"), "diff": float("nan"), "sem": float("nan")}
    x = np.asarray(pairs, np.float64)
    d = x[:, 1] - x[:, 0]
    sem = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"n": len(d), "base": float(x[:, 0].mean()), "trained": float(x[:, 1].mean()), "diff": float(d.mean()),
            "sem": sem}


def jittery_fraction(records: Sequence[Mapping], threshold: float) -> float:
    """Fraction of samples whose pixel frame smoothness is below the zoo's jitter threshold (sft/mix.py)."""
    x = np.asarray([float(r["frame_smoothness"]) for r in records], np.float64)
    return float(np.mean(x < threshold)) if x.size else float("nan")


def across_seeds(values: Sequence[float]) -> tuple[float, float]:
    """Mean and s.e. over seeds of finite values (s.e. NaN with fewer than two)."""
    x = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    if not x.size:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")


def _f(x: float, d: int = 4) -> str:
    return "—" if not math.isfinite(x) else f"{x:.{d}g}"


# ------------------------------------------------------------------------------------------------ tables
def lgm_table(eval_json: Mapping) -> tuple[list[str], dict]:
    """Item 1: agreement of the LGM with the RGB path per calibration source, against the bars."""
    agreement = eval_json["agreement"]
    sources = dict(agreement.get("by_source", {}))
    sources["pooled"] = agreement
    rows, out = [], {}
    lines = ["| source | clips | Spearman r_motion (≥ 0.8) | Spearman r_geo (≥ 0.7) | rotation LGM vs RGB ° (≤ 3) |",
             "|---|---|---|---|---|"]
    for name, a in sources.items():
        vals = {"spearman_motion": a["spearman_motion"], "spearman_geo": a["spearman_geo"],
                "rot_deg": a["vs_rgb"]["rot_deg"]}
        met = {k: (v >= bar if op == ">=" else v <= bar) for k, (op, bar) in LGM_BARS.items() for v in [vals[k]]}
        out[name] = {"num_clips": a["num_clips"], **vals, "met": met}
        cells = [f"{_f(vals[k], 3)} {'met' if met[k] else '**missed**'}" for k in LGM_BARS]
        lines.append(f"| {name} | {a['num_clips']} | " + " | ".join(cells) + " |")
    rob = eval_json.get("robustness", [])
    if rob:
        lines += ["", "Robustness (drift of each path's output under latent noise σ, against its clean output):", "",
                  "| σ | rotation ° LGM / RGB | depth AbsRel LGM / RGB |", "|---|---|---|"]
        for r in rob:
            lines.append(f"| {r['sigma']:g} | {_f(r['lgm']['rot_deg'], 3)} / {_f(r['rgb']['rot_deg'], 3)} | "
                         f"{_f(r['lgm']['depth_absrel'], 3)} / {_f(r['rgb']['depth_absrel'], 3)} |")
        out["robustness"] = rob
    return lines, out


def run_summary(report: Mapping, threshold: float) -> dict:
    """One GRPO run's report.json → paired differences per metric, jittery fractions, KL, manifold verdicts."""
    recs = report["records"]
    base_name = report["baseline"]
    (trained_name,) = [k for k in recs if k != base_name]
    base, trained = recs[base_name], recs[trained_name]
    out = {"metrics": {m: paired(base, trained, m) for m, _ in GAIN_METRICS},
           "jittery": {"base": jittery_fraction(base, threshold), "trained": jittery_fraction(trained, threshold)},
           "epi_failed": {"base": float(np.mean([r["epi_failed"] for r in base])),
                          "trained": float(np.mean([r["epi_failed"] for r in trained]))},
           "kl": report.get("settings", {}).get("final_kl", float("nan")),
           "manifold_ok": {k: v["ok"] for k, v in report.get("manifold", {}).items()}}
    return out


def gain_table(summary: Mapping, arm: str, seed: int) -> list[str]:
    """Item 2: base against the trained adapters on the held-out prompts (paired by prompt and noise)."""
    lines = [f"Arm {arm}, seed {seed}; KL to the base at the end {_f(summary['kl'], 3)}; manifold checks: " +
             ", ".join(f"{k} {'ok' if v else '**out of margin**'}" for k, v in summary["manifold_ok"].items()), "",
             "| metric | base | trained | trained − base ± s.e. | pairs |", "|---|---|---|---|---|"]
    for m, higher in GAIN_METRICS:
        p = summary["metrics"][m]
        arrow = {True: " ↑", False: " ↓", None: ""}[higher]
        lines.append(f"| {m}{arrow} | {_f(p['base'])} | {_f(p['trained'])} | {_f(p['diff'], 3)} ± {_f(p['sem'], 2)} | "
                     f"{p['n']} |")
    j = summary["jittery"]
    lines.append(f"| jittery fraction ↓ | {_f(j['base'], 3)} | {_f(j['trained'], 3)} | "
                 f"{_f(j['trained'] - j['base'], 3)} | |")
    e = summary["epi_failed"]
    lines.append(f"| Epi. failed (< min SIFT matches) | {_f(e['base'], 3)} | {_f(e['trained'], 3)} | | |")
    return lines


def table_2b(by_arm: Mapping[str, Mapping[int, Mapping]]) -> tuple[list[str], dict]:
    """Item 3: per arm, the mean over seeds of (trained − base) per metric, ± s.e. over seeds."""
    metrics = ["rgb_e_trans", "rgb_e_rot", "rgb_geo", "epi_sampson", "rgb_motion", "frame_smoothness"]
    lines = ["| arm | seeds | " + " | ".join(f"Δ {m}" for m in metrics) + " | Δ jittery fraction |",
             "|---" * (len(metrics) + 3) + "|"]
    out = {}
    for arm, seeds in by_arm.items():
        row = {m: across_seeds([s["metrics"][m]["diff"] for s in seeds.values()]) for m in metrics}
        row["jittery"] = across_seeds([s["jittery"]["trained"] - s["jittery"]["base"] for s in seeds.values()])
        out[arm] = {"seeds": sorted(seeds), **{k: {"mean": v[0], "sem": v[1]} for k, v in row.items()}}
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(f"{_f(row[m][0], 3)} ± {_f(row[m][1], 2)}"
                                                            for m in metrics)
                     + f" | {_f(row['jittery'][0], 3)} ± {_f(row['jittery'][1], 2)} |")
    return lines, out


# ------------------------------------------------------------------------------------------------ stages
def _run(cmd: Sequence[str], log: str) -> None:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print(f"[reproduce_toy] {' '.join(cmd)}\n                → {log}", flush=True)
    t0 = time.time()
    with open(log, "a") as fh:
        proc = subprocess.run(list(cmd), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"error: the stage failed (exit {proc.returncode}); see the end of {log}")
    print(f"[reproduce_toy]   done in {(time.time() - t0) / 60:.1f} min", flush=True)


def _finished(workdir: str, iterations: int) -> bool:
    """Whether this GRPO run already wrote its report after `iterations` iterations."""
    path = os.path.join(workdir, "report.json")
    return os.path.isfile(path) and json.load(open(path)).get("settings", {}).get("iterations") == iterations


def grpo_dir(out: str, arm: str, seed: int) -> str:
    return os.path.join(out, "grpo", arm.replace("+", "_"), f"seed{seed}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--iterations", type=int, default=100, help="GRPO iterations per run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--eval_prompts", type=int, default=64)
    p.add_argument("--num_samples", type=int, default=512, help="base-DiT samples for the LGM's calibration")
    p.add_argument("--grpo_override", action="append", default=[],
                   help="extra --config.x=y for every GRPO run (repeatable), e.g. --grpo_override=optim.lr=1e-3")
    a = p.parse_args(argv)
    stages = [s for s in a.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"--stages: unknown {unknown}; expected a subset of {','.join(STAGES)}")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds={a.seeds!r}: expected comma-separated integers")
    for k in ("iterations", "eval_prompts", "num_samples"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be ≥ 1")
    for o in a.grpo_override:
        if "=" not in o:
            p.error(f"--grpo_override={o!r}: expected key=value")
    out = os.path.abspath(a.out)
    logs = os.path.join(out, "logs")
    py = sys.executable
    samples, lgm = os.path.join(out, "base_samples"), os.path.join(out, "lgm")

    if "samples" in stages:
        _run([py, "tools/base_samples.py", f"--out={samples}", f"--num_samples={a.num_samples}"],
             os.path.join(logs, "samples.log"))
    if "lgm" in stages:
        _run([py, "-m", "vggrpo_jax.train_lgm", "--config=configs/lgm_zoo.py", f"--workdir={lgm}",
              f"--config.data.generated.path={samples}"], os.path.join(logs, "lgm.log"))
    if "grpo" in stages:
        if not os.path.isfile(os.path.join(lgm, "lgm", "lgm.json")):
            raise SystemExit(f"error: no LGM in {lgm}/lgm: run the lgm stage first")
        for arm, weights in ARMS.items():
            for seed in seeds:
                if _finished(grpo_dir(out, arm, seed), a.iterations):
                    continue
                _run([py, "-m", "vggrpo_jax.train", "--config=configs/toy.py", f"--workdir={grpo_dir(out, arm, seed)}",
                      "--config.lgm.build_config=", f"--config.lgm.checkpoint={lgm}/lgm", f"--config.seed={seed}",
                      f"--config.rewards.weights.motion={weights['motion']}",
                      f"--config.rewards.weights.geo={weights['geo']}", f"--config.train.num_iterations={a.iterations}",
                      f"--config.eval.every={a.iterations}", f"--config.eval.num_prompts={a.eval_prompts}",
                      *(f"--config.{o}" for o in a.grpo_override)],
                     os.path.join(logs, f"grpo_{arm.replace('+', '_')}_seed{seed}.log"))
    if "cost" in stages:
        _run([py, "benchmarks/reward_cost.py"], os.path.join(logs, "cost.log"))
    write_tables(out, seeds)


def write_tables(out: str, seeds: Sequence[int]) -> dict:
    """DIR/tables.md and DIR/tables.json from the finished stages' outputs."""
    from vggrpo_jax import zoo  # noqa: PLC0415

    threshold = float(zoo.manifest("dit")["heldout"]["mix"]["threshold"])
    md = ["# VGGRPO on the toy world: issue 13, items 1–4", ""]
    result: dict = {"jitter_threshold": threshold}
    eval_json = os.path.join(out, "lgm", "eval.json")
    if os.path.isfile(eval_json):
        lines, result["lgm"] = lgm_table(json.load(open(eval_json)))
        md += ["## 1. The LGM against the RGB path (held-out clips)", "", *lines, ""]
    by_arm: dict = {}
    for arm in ARMS:
        for seed in seeds:
            path = os.path.join(grpo_dir(out, arm, seed), "report.json")
            if os.path.isfile(path):
                by_arm.setdefault(arm, {})[seed] = run_summary(json.load(open(path)), threshold)
    if by_arm:
        md += ["## 2. The GRPO gain (held-out prompts, fixed noise, EMA adapters against the base)", "",
               f"Jittery: pixel frame smoothness below {threshold:.4g}, the zoo DiT's calibrated threshold.", ""]
        for arm, runs in by_arm.items():
            for seed, s in runs.items():
                md += gain_table(s, arm, seed) + [""]
        lines, result["table_2b"] = table_2b(by_arm)
        md += ["## 3. Table 2b in miniature: r_motion alone against r_motion + r_geo", "",
               "Mean over seeds of the paired change (trained − base) ± s.e. over seeds; rgb_geo is −(reprojection "
               "error) of the RGB path, epi_sampson the mean Sampson distance of SIFT matches (px).", "", *lines, ""]
        result["runs"] = {arm: {str(k): v for k, v in runs.items()} for arm, runs in by_arm.items()}
    cost_log = os.path.join(out, "logs", "cost.log")
    if os.path.isfile(cost_log):
        md += ["## 4. Table 2e in miniature: latent against RGB reward cost", "", "```",
               open(cost_log).read().strip()[-6000:], "```", ""]
        result["cost_log"] = cost_log
    with open(os.path.join(out, "tables.md"), "w") as fh:
        fh.write("\n".join(md))
    with open(os.path.join(out, "tables.json"), "w") as fh:
        json.dump(result, fh, indent=1, allow_nan=True)
    print(f"[reproduce_toy] wrote {out}/tables.md", flush=True)
    return result


if __name__ == "__main__":
    main()
