"""The evaluator's per-sample records and the report tooling around them (model-free: toyworld videos and reward
dicts stand in for decoded samples and the LGM / RGB-path rewards)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from vggrpo_jax import build
from vggrpo_jax.data.toyworld import caption_split, make_prompts, render_clip
from vggrpo_jax.evaluate import sample_records
from vggrpo_jax.evaluation import write_report

ROOT = Path(__file__).resolve().parents[1]


def _rewards(n, rng):
    return {k: rng.normal(size=n + 1) for k in ("motion", "geo", "e_trans", "e_rot")}  # one padded row extra


def test_sample_records_carry_every_metric_and_drop_the_padding():
    clips = [render_clip(s, num_frames=9, height=64, width=64) for s in (0, 1)]
    video = np.stack([np.moveaxis(c["video"], -1, 0) * 2 - 1 for c in clips + clips[:1]]).astype(np.float32)
    rng = np.random.default_rng(0)
    prompts = [c["caption"] for c in clips]
    splits = [caption_split(p) for p in prompts]
    recs = sample_records(video, _rewards(2, rng), _rewards(2, rng), prompts, splits, noise_seed=7, fps=8)
    assert len(recs) == 2 and [r["seed"] for r in recs] == [0, 1] and recs[0]["noise_seed"] == 7
    assert [r["split"] for r in recs] == ["static" if not c["is_dynamic"] else "dynamic" for c in clips]
    for key in ("epi_sampson", "epi_inlier_rate", "motion_smoothness", "dynamic_degree", "latent_geo", "rgb_e_rot"):
        assert key in recs[0], key
    no_rgb = sample_records(video, _rewards(2, rng), None, prompts, splits, noise_seed=7, fps=8)
    assert "rgb_geo" not in no_rgb[0] and "latent_geo" in no_rgb[0]


def test_caption_split_and_prompt_splits(tmp_path):
    caps = make_prompts(12, seed=3)
    splits = [caption_split(c) for c in caps]
    truth = [render_clip(3 + i, num_frames=1, height=8, width=8)["is_dynamic"] for i in range(12)]
    assert splits == ["dynamic" if d else "static" for d in truth] and len(set(splits)) == 2
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "split": "static"}\n{"prompt": "b"}\n')
    c = ConfigDict(dict(seed=0, prompts=dict(path=str(f), eval_path="", split="all", toyworld_count=4)))
    assert build.load_prompts_with_splits(c) == [("a", "static"), ("b", "unsplit")]
    assert build.load_prompts(c) == ["a", "b"]
    c.prompts.path = "toyworld"
    assert [p for p, _ in build.load_prompts_with_splits(c, eval_split=True)] == make_prompts(4, seed=1)


def _report(path, offset):
    recs = [{"prompt": f"p{i}", "seed": i, "noise_seed": 7, "split": "static" if i < 3 else "dynamic",
             "epi_sampson": 3.0 - offset + 0.01 * i, "motion_smoothness": 0.9 + offset} for i in range(6)]
    write_report(str(path), {"step": recs})
    return path / "report.json"


def test_compare_reports_tool(tmp_path):
    base, tuned = _report(tmp_path / "a", 0.0), _report(tmp_path / "b", 0.05)
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "tools/compare_reports.py", "--out", str(out), f"base={base}",
                           f"tuned={tuned}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "base"
    assert report["win_rates"]["all"]["tuned"]["epi_sampson"]["rate"] == 1.0
    assert report["win_rates"]["static"]["tuned"]["motion_smoothness"]["wins"] == 3
    bad = subprocess.run([sys.executable, "tools/compare_reports.py", "--out", str(out), f"base={base}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "at least one other" in bad.stderr
