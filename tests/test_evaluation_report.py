"""Win rates (paired by prompt and seed, ties as half, bootstrap intervals) and the report writer."""

import json

import numpy as np
import pytest

from vggrpo_jax.evaluation.report import compare, summarize, write_report
from vggrpo_jax.evaluation.winrate import outcomes, pair_by_key, win_rate, win_rates


def test_outcomes_respect_direction_ties_and_failures():
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    b = np.array([2.0, 2.0, 1.0, 1.0, -np.inf])
    np.testing.assert_array_equal(outcomes(a, b, higher_is_better=True)[:3], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(outcomes(a, b, higher_is_better=False)[:3], [1.0, 0.5, 0.0])
    assert np.all(np.isnan(outcomes(a, b, higher_is_better=True)[3:]))
    np.testing.assert_array_equal(outcomes([1.0, 1.05], [1.02, 1.0], higher_is_better=True, tie_tol=0.03), [0.5, 1.0])


def test_win_rate_known_answers():
    all_better = win_rate(np.arange(10.0) + 1, np.arange(10.0), higher_is_better=True)
    assert (all_better.rate, all_better.low, all_better.high, all_better.wins) == (1.0, 1.0, 1.0, 10)
    same = win_rate(np.ones(8), np.ones(8), higher_is_better=True)
    assert (same.rate, same.ties, same.low, same.high) == (0.5, 8, 0.5, 0.5)
    with_fail = win_rate(np.array([1.0, np.nan, 3.0]), np.array([0.0, 1.0, 4.0]), higher_is_better=True)
    assert (with_fail.rate, with_fail.n, with_fail.dropped) == (0.5, 2, 1)
    none = win_rate(np.array([np.nan]), np.array([1.0]), higher_is_better=True)
    assert np.isnan(none.rate) and none.dropped == 1


def test_win_rate_is_antisymmetric_and_its_interval_covers_a_fair_coin():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(size=400)
    ab = win_rate(a, b, higher_is_better=True, seed=3)
    ba = win_rate(b, a, higher_is_better=True, seed=3)
    assert ab.rate + ba.rate == pytest.approx(1.0)
    assert ab.low < 0.5 < ab.high and 0.05 < ab.high - ab.low < 0.15  # ≈ ±1.96·0.5/√400 = ±0.049
    better = win_rate(a + 0.5, b, higher_is_better=True)  # P(N(0.5, 2) > 0) ≈ 0.64
    assert 0.5 < better.low and better.rate == pytest.approx(0.64, abs=0.06)
    assert win_rate(a, b, higher_is_better=True, seed=3) == ab  # seeded: reproducible


def test_pairing_by_prompt_and_seed():
    recs_a = [{"prompt": "p", "seed": s, "m": float(s)} for s in range(3)]
    recs_b = [{"prompt": "p", "seed": s, "m": 1.0} for s in (2, 0, 1)]  # another order: pairing is by key
    w = win_rates(recs_a, recs_b, {"m": True})["m"]
    assert (w.wins, w.ties, w.losses) == (1, 1, 1)
    with pytest.raises(ValueError, match="same"):
        pair_by_key({("p", 0): 1.0}, {("p", 1): 1.0})
    with pytest.raises(ValueError, match="two records"):
        win_rates(recs_a + recs_a[:1], recs_b, {"m": True})
    with pytest.raises(KeyError, match="lacks"):
        win_rates([{"prompt": "p", "seed": 0}], recs_b, {"m": True})


def _records(offset: float, n: int = 6):
    out = []
    for i in range(n):
        out.append({"prompt": f"p{i}", "seed": 0, "split": "static" if i % 2 == 0 else "dynamic",
                    "epi_sampson": 3.0 - offset + 0.1 * i, "motion_smoothness": 0.9 + offset / 10,
                    "dynamic_degree": 1.0, "rgb_geo": -np.inf if i == 5 else -1.0 + offset})
    return out


def test_summary_and_report(tmp_path):
    base, tuned = _records(0.0), _records(1.0)
    s = summarize(base)
    assert set(s) == {"all", "dynamic", "static"}
    assert s["static"]["epi_sampson"]["mean"] == pytest.approx(3.2) and s["static"]["epi_sampson"]["n"] == 3
    assert s["static"]["epi_sampson"]["sem"] == pytest.approx(np.std([3.0, 3.2, 3.4], ddof=1) / np.sqrt(3))
    assert s["all"]["rgb_geo"]["nonfinite"] == 1 and s["all"]["rgb_geo"]["n"] == 5
    wins = compare({"base": base, "tuned": tuned}, "base")["tuned"]
    assert "dynamic_degree" not in wins  # descriptive, never ranked
    assert wins["epi_sampson"]["rate"] == 1.0 and wins["rgb_geo"]["dropped"] == 1
    report = write_report(str(tmp_path), {"base": base, "tuned": tuned}, baseline="base")
    assert report["win_rates"]["static"]["tuned"]["motion_smoothness"]["wins"] == 3
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"]["tuned"]["all"]["epi_sampson"]["mean"] == pytest.approx(2.25)
    md = (tmp_path / "report.md").read_text()
    assert "## static" in md and "epi_sampson ↓" in md and "**tuned**" in md and "(1 failed)" in md
    with pytest.raises(KeyError, match="baseline"):
        compare({"base": base}, "nope")
