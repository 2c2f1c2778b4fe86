"""Stop a run whose updates keep being skipped by the non-finite guard, instead of "finishing" with exit status 0.

The update steps skip (and report `skipped = 1`) when a loss, gradient, reward or the updated state would be
non-finite; the state then stays as it was, so every checkpoint holds finite values. One skip is noise (a degenerate
batch); many in a row mean the run cannot learn (a diverged learning rate, a broken reward) and should stop loudly.

    guard = SkipGuard(config.train.max_consecutive_skips)    # 0 = never stop
    for step in ...:
        metrics = train_step(...)
        guard.update(step, metrics)                          # raises TrainingDiverged on the N-th skip in a row
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from vggrpo_jax.errors import UserError


class TrainingDiverged(UserError, RuntimeError):
    """N consecutive updates were skipped for non-finite values; the message says which steps and what to change."""


@dataclasses.dataclass
class SkipGuard:
    """Counts consecutive skipped updates (metrics[key] > 0) and raises TrainingDiverged at `max_consecutive`."""

    max_consecutive: int
    key: str = "train/skipped"
    consecutive: int = 0

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if float(metrics.get(self.key, 0.0)) > 0:
            self.consecutive += 1
        else:
            self.consecutive = 0
        if self.max_consecutive > 0 and self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1
            raise TrainingDiverged(
                f"{self.consecutive} consecutive updates were skipped for non-finite values (steps {first}..{step}; "
                f"train.max_consecutive_skips={self.max_consecutive}): the run is not learning. Checkpoints hold only "
                f"finite values; lower optim.lr or check the rewards, then resume"
            )


__all__ = ["SkipGuard", "TrainingDiverged"]
