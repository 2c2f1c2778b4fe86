"""The run report: `<workdir>/report.md` and its pictures beside it, written when a GRPO run ends.

The trained (EMA) adapters against the base model (adapters zeroed), on the held-out evaluation prompts with the
same noise, scored by the evaluator (LGM, RGB path, pixel metrics):

    report.md, report.json   per-split means ± s.e., win rates against the base (evaluation.report), the manifold
                             checks and the run's settings
    reward_curves.png        training rewards, KL to the base and the periodic held-out evaluation (metrics.jsonl)
    cameras.png              the LGM camera paths of the first prompts, base and trained overlaid
    frames.png               the first prompts' frames, the base's row above the trained one

The manifold checks guard against reward hacking: a policy that pleases the geometry rewards by leaving the toy
world (frames the VAE cannot reproduce, washed-out colours, a camera that stops moving) fails them. Each compares the
trained samples' mean with the base's under the margin stated in MANIFOLD_MARGINS.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from vggrpo_jax.evaluation import frame_smoothness
from vggrpo_jax.evaluation.report import to_markdown, write_report
from vggrpo_jax.grpo.evaluator import EvalResult, Evaluator
from vggrpo_jax.visualize import plot_camera_pairs, plot_curves, save_frame_grid

# metric: (kind, margin). "drop": trained ≥ base − margin; "abs": |trained − base| ≤ margin; "ratio": trained / base
# within [1 − margin, 1 + margin].
MANIFOLD_MARGINS: dict[str, tuple[str, float]] = {
    "vae_roundtrip_psnr": ("drop", 2.0),  # dB
    "colour_mean": ("abs", 0.05),  # per channel, video units ([−1, 1])
    "colour_std": ("ratio", 0.15),
    "saturation": ("ratio", 0.15),  # mean (max − min over RGB) per pixel: the coloured objects are still there
    "frame_difference": ("ratio", 0.3),  # mean |f_{t+1} − f_t|: the camera (or scene) still moves as much
}
NUM_PICTURED = 4


def manifold_scores(video: np.ndarray) -> dict[str, np.ndarray]:
    """video (n, 3, F, H, W) in [−1, 1] → per-sample colour_mean (n, 3), colour_std (n, 3), saturation (n,) and
    frame_difference (n,). Saturation catches a policy that fades the scene's coloured objects into the grey floor
    and pale sky (fewer objects, fewer points to disagree on) while the global colour statistics barely move."""
    v = np.asarray(video, np.float64)
    return {"colour_mean": v.mean(axis=(2, 3, 4)), "colour_std": v.std(axis=(2, 3, 4)),
            "saturation": (v.max(axis=1) - v.min(axis=1)).mean(axis=(1, 2, 3)),
            "frame_difference": np.abs(np.diff(v, axis=2)).mean(axis=(1, 2, 3, 4))}


def manifold_checks(base: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """{metric: {base, trained, kind, margin, ok}} with the means over samples (per channel for colours)."""
    out = {}
    for name, (kind, margin) in MANIFOLD_MARGINS.items():
        b, t = np.mean(np.asarray(base[name], np.float64), 0), np.mean(np.asarray(trained[name], np.float64), 0)
        if kind == "drop":
            ok = np.all(t >= b - margin)
        elif kind == "abs":
            ok = np.all(np.abs(t - b) <= margin)
        else:
            ok = np.all(np.abs(t / np.maximum(b, 1e-12) - 1.0) <= margin)
        out[name] = {"base": np.atleast_1d(b).tolist(), "trained": np.atleast_1d(t).tolist(), "kind": kind,
                     "margin": margin, "ok": bool(ok)}
    return out


def _with_manifold(result: EvalResult, evaluator: Evaluator) -> tuple[list[dict], dict[str, np.ndarray]]:
    scores = manifold_scores(result.video)
    scores["vae_roundtrip_psnr"] = evaluator.roundtrip_psnr(result.video)
    smooth = frame_smoothness(result.video)
    records = [dict(r, vae_roundtrip_psnr=float(scores["vae_roundtrip_psnr"][i]), frame_smoothness=float(smooth[i]),
                    frame_difference=float(scores["frame_difference"][i]), saturation=float(scores["saturation"][i]))
               for i, r in enumerate(result.records)]
    return records, scores


def read_metrics(path: str) -> list[dict]:
    """The rows of a run's metrics.jsonl (one per logged step); [] when there is none yet."""
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def reward_curve_panels(rows: Sequence[Mapping]) -> dict[str, dict[str, tuple[list, list]]]:
    """The panels of reward_curves.png from metrics.jsonl rows: each curve only where its key was logged."""

    def curve(key: str) -> tuple[list, list]:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    panels = {
        "r_motion ↑": {"train (LGM)": curve("reward/motion_mean"), "held-out LGM": curve("eval/latent_motion"),
                       "held-out RGB path": curve("eval/rgb_motion")},
        "r_geo ↑": {"train (LGM)": curve("reward/geo_mean"), "held-out LGM": curve("eval/latent_geo"),
                    "held-out RGB path": curve("eval/rgb_geo")},
        "e_trans / e_rot ↓ (train, LGM)": {"e_trans": curve("reward/e_trans_mean"),
                                           "e_rot": curve("reward/e_rot_mean")},
        "KL to the base": {"kl": curve("train/kl")},
        "held-out frame smoothness ↑": {"pixels": curve("eval/frame_smoothness")},
    }
    return {t: {n: c for n, c in p.items() if c[0]} for t, p in panels.items() if any(c[0] for c in p.values())}


def _settings(config: Any, step: int, rows: Sequence[Mapping], eval_prompts: int) -> dict[str, Any]:
    kl = [r["train/kl"] for r in rows if "train/kl" in r]
    return {"iterations": int(step), "group_size": int(config.rl.group_size),
            "prompts_per_batch": int(config.rl.prompts_per_batch), "sde_steps": int(config.rl.num_steps),
            "lr": float(config.optim.lr), "lora_rank": int(config.lora.rank),
            "reward_weights": dict(config.rewards.weights), "beta_kl": float(config.rl.beta),
            "final_kl": float(np.mean(kl[-5:])) if kl else float("nan"),
            "eval_prompts": int(eval_prompts), "eval_steps": int(config.eval.num_steps)}


def _manifold_markdown(checks: Mapping[str, Mapping]) -> list[str]:
    fmt = lambda xs: ", ".join(f"{x:.4g}" for x in xs)  # noqa: E731
    rule = {"drop": "trained ≥ base − {m}", "abs": "|trained − base| ≤ {m}", "ratio": "trained / base within 1 ± {m}"}
    lines = ["| check | base | trained | margin | within |", "|---|---|---|---|---|"]
    for name, c in checks.items():
        lines.append(f"| {name} | {fmt(c['base'])} | {fmt(c['trained'])} | {rule[c['kind']].format(m=c['margin'])} | "
                     f"{'yes' if c['ok'] else '**no**'} |")
    return lines


def write_run_report(config: Any, workdir: str, evaluator: Evaluator, base_lora: Any, trained_lora: Any,
                     step: int) -> dict | None:
    """Scores base and trained adapters on the evaluator's prompts and writes `<workdir>/report.md` (with
    report.json and the PNGs); returns the report dict on process 0 (None elsewhere). Collective: every host."""
    base, trained = evaluator.score(base_lora), evaluator.score(trained_lora)
    base_records, base_scores = _with_manifold(base, evaluator)
    trained_records, trained_scores = _with_manifold(trained, evaluator)
    if jax.process_index() != 0:
        return None
    out = workdir
    name = f"GRPO step {step}"
    report = write_report(out, {"base": base_records, name: trained_records}, baseline="base")
    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    settings = _settings(config, step, rows, len(base_records))
    checks = manifold_checks(base_scores, trained_scores)

    pictures = []
    panels = reward_curve_panels(rows)
    if panels:
        plot_curves(panels, os.path.join(out, "reward_curves.png"))
        pictures.append(("Reward curves", "reward_curves.png"))
    k = min(NUM_PICTURED, len(base_records))
    prompts = [r["prompt"] for r in base_records[:k]]
    plot_camera_pairs(base.c2w[:k], trained.c2w[:k], os.path.join(out, "cameras.png"), titles=prompts,
                      labels=("base", name))
    pictures.append(("LGM camera paths, base (blue) and trained (orange), each relative to its first camera",
                     "cameras.png"))
    grid = np.stack([v for i in range(k) for v in (base.video[i], trained.video[i])])
    titles = [t for i in range(k) for t in (f"base: {prompts[i][:40]}", name)]
    save_frame_grid(grid, os.path.join(out, "frames.png"), row_titles=titles)
    pictures.append(("Frames of the first prompts: the base's row above the trained one (same noise)", "frames.png"))

    summary = {n: report["summary"][n] for n in report["summary"]}
    table = to_markdown(summary, report["win_rates"], "base").replace("# Evaluation report\n", "", 1)
    table = "\n".join(("#" + line) if line.startswith("#") else line for line in table.splitlines())
    w = settings["reward_weights"]
    md = [f"# GRPO run report: {os.path.basename(os.path.abspath(workdir))}", "",
          f"{step} iterations of {settings['prompts_per_batch']} prompts × {settings['group_size']} samples, "
          f"{settings['sde_steps']} SDE steps, LoRA rank {settings['lora_rank']}, lr {settings['lr']:g}, reward "
          f"weights motion {w.get('motion')} / geo {w.get('geo')}, KL weight {settings['beta_kl']:g}; KL to the base "
          f"at the end {settings['final_kl']:.4g}. Evaluation: {settings['eval_prompts']} held-out prompts, "
          f"{settings['eval_steps']} ODE steps, the same noise for both; the trained side uses the EMA adapters.", "",
          "## Held-out prompts: base against trained", table, "",
          "## Still on the toy world's manifold?", "",
          "Against reward hacking: the trained samples' means beside the base's (VAE round-trip PSNR in dB, colour "
          "statistics per RGB channel in [−1, 1], saturation, mean absolute frame difference).", "",
          *_manifold_markdown(checks), ""]
    for caption, png in pictures:
        md += [f"## {caption}", "", f"![{png}]({png})", ""]
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(md))
    report.update(settings=settings, manifold=checks)
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=lambda x: x.item() if isinstance(x, np.generic) else str(x))
    return report


__all__ = ["MANIFOLD_MARGINS", "manifold_checks", "manifold_scores", "read_metrics", "reward_curve_panels",
           "write_run_report"]
