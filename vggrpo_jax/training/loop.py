"""The loop helper every job runs its steps through: progress bar, periodic actions (log / checkpoint / eval every
k steps), step time and throughput, an optional profiler window, and a clean stop on SIGTERM / SIGINT.

    loop = TrainLoop(total_steps=T, start_step=start, writer=writer, samples_per_step=B, log_every=10,
                     checkpoint=lambda step: ckpt.save(step, state, data=it), checkpoint_every=100,
                     profile_steps=config.train.profile_steps, workdir=workdir, desc="vae")
    loop.every(500, lambda step: evaluate(state))      # an action may return metrics: they are logged with the step
    with loop:                                         # installs the SIGTERM/SIGINT handler, closes the bar
        for step in loop:                              # step = 1-based number of the step being run
            state, metrics = train_step(state, next(it))
            loop.step_done(step, metrics)

Steps are numbered 1..total_steps: `step` is the number of steps done once this one finishes, the number a
checkpoint written after it carries, so a run restored at step s continues with s + 1.

`step_done` fetches the metrics (which waits for the step, so the step time is the device time, not the dispatch
time), adds perf/step_seconds and perf/samples_per_second, runs the due actions, writes the metrics every
`log_every` steps, at the last step and whenever an action returned metrics, and updates the progress bar.

Stop on demand: the first SIGTERM or SIGINT sets `stop_requested`; the loop finishes the current step, calls the
checkpoint action, waits for it, and raises `StopRequested` (a SystemExit with a non-zero code and a message
saying where to resume). A second SIGINT interrupts immediately. With several processes the flag is agreed
between them every step, so all hosts stop after the same step.

Profiler window: `profile_steps = N > 0` traces N steps, starting with the second step of this run (the first one
compiles), into `workdir/profile` (open with tensorboard --logdir WORKDIR/profile, or Perfetto/XProf).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from absl import logging

from vggrpo_jax.training.guard import SkipGuard
from vggrpo_jax.training.metrics import StepTimer

Action = Callable[[int], Mapping[str, Any] | None]


class StopRequested(SystemExit):
    """Raised after the step during which a stop was requested, once its checkpoint is on disk."""


class TrainLoop:
    """Runs steps start_step + 1 .. total_steps with periodic actions; see the module docstring.

    Args:
      total_steps: the last step of the run.
      start_step: the step a restored checkpoint carries (0 for a fresh run).
      writer: a MetricWriter (or anything with write(step, scalars)); None = no logging.
      metric_prefix: prepended to every written key (e.g. "stitch/" when several stages share one writer).
      samples_per_step: global samples per step, for perf/samples_per_second.
      log_every: write metrics every k steps (0 = only at the last step and when an action returns metrics).
      checkpoint: step → None; called every `checkpoint_every` steps, at the last step and on a stop request.
      checkpoint_wait: called before exiting on a stop request (e.g. Checkpointer.wait), so the save is complete.
      profile_steps: number of steps to trace (0 = no trace); workdir: where `profile/` goes.
      desc: the progress-bar label; postfix: metric keys shown on the bar.
      handle_signals: install the SIGTERM/SIGINT handler while the loop is entered (`with loop:`).
      max_consecutive_skips: raise guard.TrainingDiverged once this many steps in a row reported
        metrics[skip_key] > 0 (an update skipped by guard.guarded_update); 0 = never.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        *,
        writer: Any = None,
        metric_prefix: str = "",
        samples_per_step: int | None = None,
        log_every: int = 1,
        checkpoint: Callable[[int], Any] | None = None,
        checkpoint_every: int = 0,
        checkpoint_wait: Callable[[], Any] | None = None,
        profile_steps: int = 0,
        workdir: str | None = None,
        desc: str = "train",
        postfix: Sequence[str] = (),
        progress: bool = True,
        handle_signals: bool = True,
        max_consecutive_skips: int = 0,
        skip_key: str = "skipped",
    ):
        if int(total_steps) < 0 or int(start_step) < 0:
            raise ValueError(f"total_steps ({total_steps}) and start_step ({start_step}) must be ≥ 0")
        if int(profile_steps) < 0:
            raise ValueError(f"train.profile_steps must be ≥ 0, got {profile_steps}")
        if int(profile_steps) and workdir is None:
            raise ValueError("train.profile_steps > 0 needs a workdir for the trace")
        self.total_steps, self.start_step = int(total_steps), int(start_step)
        self.writer, self.log_every, self.metric_prefix = writer, int(log_every), metric_prefix
        self.timer = StepTimer(samples_per_step)
        self._checkpoint, self._checkpoint_every, self._checkpoint_wait = checkpoint, int(checkpoint_every), checkpoint_wait
        self._actions: list[tuple[int, Action, bool]] = []
        self.profile_steps, self.workdir = int(profile_steps), workdir
        self._profile_first = self.start_step + 2  # the first step of a run compiles: trace from the second
        self._profiling = False
        self.desc, self.postfix, self.progress = desc, tuple(postfix), progress
        self.handle_signals = handle_signals
        if int(max_consecutive_skips) < 0:
            raise ValueError(f"train.max_consecutive_skips must be ≥ 0, got {max_consecutive_skips}")
        self.guard = SkipGuard(int(max_consecutive_skips), key=skip_key)
        self.stop_requested = False
        self.stop_signal: str | None = None
        self._old_handlers: dict[int, Any] = {}
        self._bar = None
        self.last_metrics: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- set-up
    def every(self, k: int, action: Action, at_end: bool = True) -> "TrainLoop":
        """Calls action(step) every k steps (k ≤ 0: never periodically) and, with at_end, at the last step."""
        self._actions.append((int(k), action, bool(at_end)))
        return self

    def request_stop(self, reason: str = "request") -> None:
        """Asks the loop to save and stop after the current step (what the signal handler calls)."""
        self.stop_requested = True
        self.stop_signal = reason

    def __enter__(self) -> "TrainLoop":
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        if self.progress and jax.process_index() == 0 and self.start_step < self.total_steps:
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(total=self.total_steps, initial=self.start_step, desc=self.desc, dynamic_ncols=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._profiling:
            jax.profiler.stop_trace()
            self._profiling = False
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logging.warning("%s received: finishing the current step, saving a checkpoint, then stopping", name)
        self.request_stop(name)

    # -------------------------------------------------------------------------------------------- the steps
    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step + 1, self.total_steps + 1):
            if self.profile_steps and step == self._profile_first:
                jax.profiler.start_trace(os.path.join(self.workdir, "profile"))
                self._profiling = True
            self.timer.start()
            yield step

    def step_done(self, step: int, metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Ends `step`: timing, due actions, logging, progress, profiler window, stop request. Returns the step's
        metrics as floats (with the perf/ keys and any metrics the actions returned)."""
        values = {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics or {})).items()}
        values.update(self.timer.stop())
        if self._profiling and step >= self._profile_first + self.profile_steps - 1:
            jax.profiler.stop_trace()
            self._profiling = False
        last = step == self.total_steps
        extra: dict[str, float] = {}
        for k, action, at_end in self._actions:
            if (k > 0 and step % k == 0) or (last and at_end):
                out = action(step)
                if out:
                    extra.update({name: float(np.asarray(v)) for name, v in jax.device_get(dict(out)).items()})
        values.update(extra)
        stop = self._agree(self.stop_requested)
        if self._checkpoint is not None and (
            (self._checkpoint_every > 0 and step % self._checkpoint_every == 0) or last or stop
        ):
            self._checkpoint(step)
        if self.writer is not None and ((self.log_every > 0 and step % self.log_every == 0) or last or extra):
            self.writer.write(step, {self.metric_prefix + k: v for k, v in values.items()})
        if self._bar is not None:
            self._bar.update(1)
            shown = {k.split("/")[-1]: f"{values[k]:.4g}" for k in self.postfix if k in values}
            if shown:
                self._bar.set_postfix(shown)
        self.last_metrics = values
        try:
            self.guard.update(step, values)  # after the step's metrics and checkpoint (of finite values) are written
        except Exception:
            if self._checkpoint_wait is not None:
                self._checkpoint_wait()  # the run stops here: its last checkpoint must be on disk
            raise
        if stop and not last:
            if self._checkpoint_wait is not None:
                self._checkpoint_wait()
            self.close()
            raise StopRequested(
                f"stopped by {self.stop_signal or 'request'} after step {step} of {self.total_steps}"
                + ("; a checkpoint was saved: rerun the same command to resume" if self._checkpoint else "")
            )
        return values

    @staticmethod
    def _agree(flag: bool) -> bool:
        if jax.process_count() == 1:
            return flag
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


__all__ = ["StopRequested", "TrainLoop"]
