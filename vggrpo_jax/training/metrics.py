"""The one metric writer: tensorboard event files (tensorboardX) plus `metrics.jsonl`, written by process 0 only;
and a step timer for step time and throughput.

    writer = MetricWriter(workdir)             # workdir/tb (tensorboard) and workdir/metrics.jsonl
    writer.write(step, {"loss": 0.1})          # one json line per call: {"step": 7, "loss": 0.1}
    writer.write_images(step, {"samples": grid})   # (H, W, C) or (N, H, W, C), uint8 or float in [0, 1]
    rows = read_metrics(workdir)               # the last row per step (a resumed run rewrites later steps)
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np

STEP_SECONDS = "perf/step_seconds"
SAMPLES_PER_SECOND = "perf/samples_per_second"


class MetricWriter:
    """Writes scalars to `workdir/tb` (tensorboard-readable) and `workdir/metrics.jsonl` (one line per write).

    `prefix` is prepended to every key ("stitch/" → "stitch/loss"). Only process 0 writes; on other processes every
    method is a no-op, so jobs call it unconditionally. Non-finite values are written as they are (JSON NaN).
    """

    def __init__(self, workdir: str, prefix: str = "", tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.prefix = prefix
        self.workdir = workdir
        self._tb = None
        self._jsonl = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter  # noqa: PLC0415  (imports tensorflow-free protobufs lazily)

                self._tb = SummaryWriter(os.path.join(workdir, "tb"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalars (anything np.asarray turns into a single number) for `step`."""
        if not self.enabled or not scalars:
            return
        clean = {self.prefix + k: float(np.asarray(v)) for k, v in scalars.items()}
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Writes images to tensorboard: (H, W, C) or (N, H, W, C), uint8 or float in [0, 1]."""
        if not self.enabled or self._tb is None:
            return
        for k, img in images.items():
            img = np.asarray(img)
            if img.ndim not in (3, 4):
                raise ValueError(f"image {k!r} has shape {img.shape}; expected (H, W, C) or (N, H, W, C)")
            self._tb.add_images(self.prefix + k, img if img.ndim == 4 else img[None], step, dataformats="NHWC")
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            if self._tb is not None:
                self._tb.close()
            self._jsonl.close()
            self.enabled = False


def read_metrics(workdir: str) -> list[dict]:
    """The metrics.jsonl rows of a run, one per step, merged: a later write of the same step adds or replaces keys
    (so a resumed run's rewrites win and several writes of one step, e.g. train and eval, are one row)."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows: dict[int, dict] = {}
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            rows.setdefault(row["step"], {}).update(row)
    return [rows[k] for k in sorted(rows)]


class StepTimer:
    """Wall time of each step and of named sections within it, and the throughput.

        timer = StepTimer(samples_per_step=64)
        timer.start()
        with timer.section("rollout"):
            out = jax.block_until_ready(rollout(...))   # block inside, or the section measures only the dispatch
        ...
        perf = timer.stop()   # {"perf/step_seconds": s, "perf/samples_per_second": 64 / s, "perf/rollout_seconds": …}
    """

    def __init__(self, samples_per_step: int | None = None):
        self.samples_per_step = samples_per_step
        self._t0: float | None = None
        self._sections: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._sections = {}

    def section(self, name: str) -> "_Section":
        return _Section(self, name)

    def stop(self) -> dict[str, float]:
        if self._t0 is None:
            raise RuntimeError("StepTimer.stop() without start()")
        seconds = time.perf_counter() - self._t0
        self._t0 = None
        out = {STEP_SECONDS: seconds}
        if self.samples_per_step:
            out[SAMPLES_PER_SECOND] = self.samples_per_step / max(seconds, 1e-12)
        out.update({f"perf/{k}_seconds": v for k, v in self._sections.items()})
        return out


class _Section:
    def __init__(self, timer: StepTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timer._sections[self.name] = self.timer._sections.get(self.name, 0.0) + time.perf_counter() - self._t


__all__ = ["MetricWriter", "SAMPLES_PER_SECOND", "STEP_SECONDS", "StepTimer", "read_metrics"]
