"""tools/reproduce_toy.py's tables: paired differences, bars, seeds (the stages themselves are the jobs' own CLIs)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("reproduce_toy", os.path.join(ROOT, "tools", "reproduce_toy.py"))
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)


def _records(shift=0.0, n=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = {"prompt": f"p{i}", "seed": i, "split": "static", "epi_failed": 1.0}
        for m, _ in rt.GAIN_METRICS:
            r[m] = float(rng.normal()) + shift
        r["frame_smoothness"] = 0.55 + 0.01 * i + shift
        out.append(r)
    return out


def test_paired_difference_is_trained_minus_base_over_finite_pairs():
    base = _records()
    trained = [dict(r, rgb_motion=r["rgb_motion"] + 0.5) for r in base]
    trained[3]["rgb_motion"] = float("nan")  # a failed sample drops its pair, not the whole metric
    p = rt.paired(base, list(reversed(trained)), "rgb_motion")  # paired by (prompt, seed), not by position
    assert p["n"] == 15 and p["diff"] == pytest.approx(0.5) and p["sem"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(rt.paired(base, trained, "not_a_metric")["diff"])


def test_run_summary_and_table_2b_average_over_seeds():
    by_arm = {}
    for arm, gain in (("motion", 0.1), ("motion+geo", 0.3)):
        for seed in (0, 1, 2):
            base = _records(seed=seed)
            trained = [dict(r, rgb_geo=r["rgb_geo"] + gain + 0.01 * seed, frame_smoothness=r["frame_smoothness"] + 0.05)
                       for r in base]
            report = {"baseline": "base", "records": {"base": base, "GRPO step 9": trained},
                      "settings": {"final_kl": 0.01}, "manifold": {"colour_std": {"ok": True}}}
            by_arm.setdefault(arm, {})[seed] = rt.run_summary(json.loads(json.dumps(report)), threshold=0.6)
    s = by_arm["motion"][0]
    assert s["jittery"]["base"] == pytest.approx(5 / 16) and s["jittery"]["trained"] == 0.0
    lines, table = rt.table_2b(by_arm)
    assert table["motion+geo"]["rgb_geo"]["mean"] == pytest.approx(0.31)
    assert table["motion"]["rgb_geo"]["sem"] == pytest.approx(np.std([0.1, 0.11, 0.12], ddof=1) / math.sqrt(3))
    assert len(lines) == 4 and lines[3].startswith("| motion+geo | 3 |")


def test_lgm_table_checks_each_bar_per_source():
    def agreement(sm, sg, rot):
        return {"spearman_motion": sm, "spearman_geo": sg, "vs_rgb": {"rot_deg": rot}, "num_clips": 64}
    ev = {"agreement": {**agreement(0.64, 0.78, 5.2), "num_clips": 128,
                        "by_source": {"real": agreement(0.81, 0.81, 4.4), "generated": agreement(0.36, 0.75, 6.1)}}}
    lines, out = rt.lgm_table(ev)
    assert out["real"]["met"] == {"spearman_motion": True, "spearman_geo": True, "rot_deg": False}
    assert out["generated"]["met"]["spearman_motion"] is False and out["pooled"]["num_clips"] == 128
    assert "**missed**" in lines[2] and len(lines) == 5


def test_bad_flags_fail_before_any_work(tmp_path, capsys):
    for argv in (["--stages=lgm,train"], ["--seeds=a"], ["--iterations=0"], ["--grpo_override=optim.lr"]):
        with pytest.raises(SystemExit) as e:
            rt.main([f"--out={tmp_path}", *argv])
        assert e.value.code == 2
    assert not os.listdir(tmp_path)
