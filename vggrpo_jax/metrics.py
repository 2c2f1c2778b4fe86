"""Metrics: tensorboard event files plus a metrics.jsonl, written by process 0 only."""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
    """Writes scalars to `workdir/tb` (tensorboard-readable) and `workdir/metrics.jsonl` (one line per step)."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # noqa: PLC0415

            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for k, v in clean.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def read_metrics(workdir: str) -> list[dict]:
    """The metrics.jsonl rows of a run (the last row per step wins: a resumed run rewrites later steps)."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows: dict[int, dict] = {}
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]
