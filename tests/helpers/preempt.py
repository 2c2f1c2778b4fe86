"""Running a job as a subprocess and preempting it with a real signal once it has logged some steps.

    proc = start(cmd, env)                                     # stdout+stderr to a file beside the workdir
    wait_for_step(proc, metrics_path, 3)                       # polls metrics.jsonl for a row with step ≥ 3
    proc.send_signal(signal.SIGTERM); rc, out = finish(proc)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def job_env(single_device: bool = True) -> dict:
    """The test session's environment for a child job, at the lowest CPU priority, with the repository importable."""
    env = dict(os.environ)
    if single_device:
        env.pop("XLA_FLAGS", None)  # a user's single CPU device
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    """Waits for the job; returns (exit status, its whole output)."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    proc.log.seek(0)  # type: ignore[attr-defined]
    return rc, proc.log.read()  # type: ignore[attr-defined]


def run(cmd: list[str], env: dict, timeout: float = 900) -> tuple[int, str]:
    return finish(start(cmd, env), timeout)


def logged_steps(metrics_path: str, prefix: str = "") -> list[int]:
    """Steps of metrics.jsonl rows that carry a key starting with `prefix` (a job's stage), in file order."""
    if not os.path.exists(metrics_path):
        return []
    steps = []
    with open(metrics_path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a row being written
            row = json.loads(line)
            if any(k.startswith(prefix) for k in row if k != "step"):
                steps.append(int(row["step"]))
    return steps


def wait_for_step(proc: subprocess.Popen, metrics_path: str, step: int, prefix: str = "",
                  timeout: float = 900) -> int:
    """Polls until the job has logged a row with step ≥ `step`; returns that step. Fails if the job ends first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = logged_steps(metrics_path, prefix)
        if done and max(done) >= step:
            return max(done)
        if proc.poll() is not None:
            rc, out = finish(proc)
            raise AssertionError(f"the job ended (status {rc}) before logging step {step}:\n{out[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no step {step} logged within {timeout} s")


def metric_rows(metrics_path: str) -> dict[int, dict]:
    """{step: merged row without wall-clock keys} of a metrics.jsonl (a resumed run appends to the same file).

    Wall-clock keys are those with a ``perf`` path component: ``perf/step_seconds`` and the LGM's nested
    ``stitch/<variant>/l<k>/perf/step_seconds`` alike.
    """
    rows: dict[int, dict] = {}
    with open(metrics_path) as fh:
        for line in fh:
            row = json.loads(line)
            rows.setdefault(int(row.pop("step")), {}).update({k: v for k, v in row.items() if "perf" not in k.split("/")})
    return rows


PYTHON = sys.executable
