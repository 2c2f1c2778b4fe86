"""A run whose updates keep being skipped for non-finite values stops with a clear error (not exit status 0)."""

import pytest

from test_train import _config, lgm_dir  # noqa: F401  (the tiny saved LGM fixture)
from vggrpo_jax.training.guard import SkipGuard, TrainingDiverged


def test_skip_guard_counts_only_consecutive_skips():
    guard = SkipGuard(3)
    for step, skipped in enumerate([1, 1, 0, 1, 1], start=1):
        guard.update(step, {"train/skipped": float(skipped)})
    assert guard.consecutive == 2
    with pytest.raises(TrainingDiverged, match=r"3 consecutive updates were skipped .*steps 4\.\.6"):
        guard.update(6, {"train/skipped": 1.0})
    never = SkipGuard(0)
    for step in range(1, 50):
        never.update(step, {"train/skipped": 1.0})


def test_grpo_run_stops_after_consecutive_skipped_updates(lgm_dir, tmp_path, monkeypatch):  # noqa: F811
    from vggrpo_jax.grpo import trainer as trainer_module
    from vggrpo_jax.training import read_metrics
    from vggrpo_jax.train import train

    def skipped_iteration(self, state, cond, uncond, key, timer=None):
        metrics = {"train/skipped": 1.0, "train/kl": 0.0, "reward/motion_mean": 0.5, "reward/geo_mean": -1.0}
        return state, metrics, None

    monkeypatch.setattr(trainer_module.GRPOTrainer, "iteration", skipped_iteration)
    c = _config(lgm_dir, 6)
    c.train.max_consecutive_skips = 3
    with pytest.raises(TrainingDiverged, match=r"3 consecutive updates were skipped .*\(steps 1\.\.3; "
                                               r"train\.max_consecutive_skips=3\)"):
        train(c, str(tmp_path))
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
