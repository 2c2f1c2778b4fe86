#!/usr/bin/env python
"""Retrain the toy world's zoo from scratch: data, VAE, geometry model, DiT — one command, resumable, with each
job's throughput.

    python tools/train_zoo.py --workdir=DIR [--only=vae,geometry,dit] [--install]

Stages, each a job of its own (run as a subprocess, so an interruption loses at most one checkpoint interval;
rerunning the same command resumes every unfinished job and re-exports finished ones):

  data       the toyworld/zoo tfds dataset (ArrayRecord), built once into the tfds data dir
  vae        python -m vggrpo_jax.train_vae      --config=configs/vae_toy.py       --workdir=DIR/vae
  geometry   python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py  --workdir=DIR/geometry
  dit        python -m vggrpo_jax.finetune       --config=configs/dit_toy.py       --workdir=DIR/dit
             (reads the zoo VAE, so `vae` must be installed first)

Each model is exported to DIR/<stage>/export; `--install` points the exports at vggrpo_jax/zoo/weights/<name>
(what `zoo.load` reads). At the end a table gives each stage's wall time, steps and samples per second (the
median of the job's logged `perf/samples_per_second`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STAGES = ("data", "vae", "geometry", "dit")
JOBS = {
    "vae": ("vggrpo_jax.train_vae", "configs/vae_toy.py", "vae"),
    "geometry": ("vggrpo_jax.train_geometry", "configs/geometry_toy.py", "geometry"),
    "dit": ("vggrpo_jax.finetune", "configs/dit_toy.py", "dit"),
}


def _run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - t


def _throughput(workdir: str) -> tuple[int, float]:
    from vggrpo_jax.training.metrics import SAMPLES_PER_SECOND, read_metrics  # noqa: PLC0415

    rows = read_metrics(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else []
    rates = [r[SAMPLES_PER_SECOND] for r in rows if SAMPLES_PER_SECOND in r]
    steps = max((r["step"] for r in rows), default=0)
    return steps, statistics.median(rates) if rates else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="one directory per job is made under it")
    p.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    p.add_argument("--install", action="store_true", help="export into vggrpo_jax/zoo/weights/<name>")
    a = p.parse_args(argv)
    stages = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"--only: unknown stage(s) {bad}; choose from {STAGES}")
    report = []
    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "data":
            secs = _run([sys.executable, "-m", "vggrpo_jax.data.toyworld_tfds", "--config=zoo"])
            report.append((stage, secs, 0, float("nan")))
            continue
        module, config, name = JOBS[stage]
        wd = os.path.join(os.path.abspath(a.workdir), stage)
        cmd = [sys.executable, "-m", module, f"--config={config}", f"--workdir={wd}"]
        if a.install:
            weights = os.path.join(ROOT, "vggrpo_jax", "zoo", "weights")
            cmd.append(f"--config.export.dir={os.path.join(weights, name)}")
            if stage == "dit":
                cmd.append(f"--config.export.text_dir={os.path.join(weights, 'text')}")
        secs = _run(cmd)
        steps, rate = _throughput(wd)
        report.append((stage, secs, steps, rate))
    print(f"\n{'stage':<10}{'wall':>10}{'steps':>8}{'samples/s':>11}")
    for stage, secs, steps, rate in report:
        print(f"{stage:<10}{secs / 60:>8.1f} m{steps:>8}{rate:>11.2f}")
    print(f"{'total':<10}{sum(r[1] for r in report) / 60:>8.1f} m")


if __name__ == "__main__":
    main()
