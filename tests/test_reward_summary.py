"""One reward summary: rewards.finite_stats gives the GRPO trainer's reward/* metrics (jitted) and the evaluator's
eval/* reward metrics (host), with the same statistics over the finite entries."""

import jax
import jax.numpy as jnp
import numpy as np

from vggrpo_jax.rewards import finite_stats


def test_statistics_over_the_finite_entries():
    x = np.array([0.5, -np.inf, 1.5, np.nan, 1.0, 2.0], np.float32)
    ok = x[np.isfinite(x)].astype(np.float64)
    host = finite_stats(x)
    assert host["mean"] == ok.mean() and np.isclose(host["std"], ok.std(), rtol=0, atol=1e-15)
    assert np.isclose(host["nonfinite_frac"], 2 / 6, rtol=0, atol=1e-15)
    traced = jax.jit(finite_stats)(jnp.asarray(x))  # the trainer's path: inside jit, float32
    for k in ("mean", "std", "nonfinite_frac"):
        assert traced[k].dtype == jnp.float32
        np.testing.assert_allclose(float(traced[k]), host[k], rtol=1e-6)


def test_no_finite_entry_has_no_mean():
    for stats in (finite_stats(np.full(3, -np.inf)), jax.jit(finite_stats)(jnp.full(3, jnp.nan))):
        assert np.isnan(stats["mean"]) and np.isnan(stats["std"]) and float(stats["nonfinite_frac"]) == 1.0
    # the trainer's curves: 0 instead, the iteration marked by nonfinite_frac = 1
    from vggrpo_jax.grpo import evaluator, trainer

    stats = jax.jit(lambda r: trainer._stats("reward/geo", r))(jnp.full(4, -jnp.inf))
    assert {k: float(v) for k, v in stats.items()} == {"reward/geo_mean": 0.0, "reward/geo_std": 0.0,
                                                       "reward/geo_nonfinite_frac": 1.0}
    assert np.isnan(evaluator._summary("eval/latent", {"motion": np.ones(2), "geo": np.full(2, -np.inf)})[
        "eval/latent_geo"])  # the evaluator: no mean


def test_trainer_and_evaluator_report_the_same_reward_statistics():
    from vggrpo_jax.grpo import evaluator, trainer

    rewards = {"motion": np.array([0.25, 0.75, 0.5, 1.0], np.float32),
               "geo": np.array([-1.0, -np.inf, -3.0, -2.0], np.float32)}
    ev = evaluator._summary("eval/latent", rewards)
    for name in ("motion", "geo"):
        tr = jax.jit(lambda r: trainer._stats(f"reward/{name}", r))(jnp.asarray(rewards[name]))
        assert set(tr) == {f"reward/{name}_mean", f"reward/{name}_std", f"reward/{name}_nonfinite_frac"}
        np.testing.assert_allclose(float(tr[f"reward/{name}_mean"]), ev[f"eval/latent_{name}"], rtol=1e-6)
        assert float(tr[f"reward/{name}_nonfinite_frac"]) == ev[f"eval/latent_{name}_nonfinite_frac"]
    assert ev["eval/latent_geo"] == -2.0 and ev["eval/latent_geo_nonfinite_frac"] == 0.25
