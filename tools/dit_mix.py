#!/usr/bin/env python
"""Does the toy DiT reproduce its data's mix of smooth and jittered cameras? (vggrpo_jax/sft/mix.py)

    python tools/dit_mix.py --out=DIR [--dit=zoo|EXPORT_DIR] [--text=zoo|EXPORT_DIR] [--vae=zoo|EXPORT_DIR]
                            [--num_samples=64] [--num_data=64] [--num_steps=20] [--cfg_scale=5] [--seed=0]

Writes DIR/mix.json (threshold, its accuracy, jittery fraction and score quantiles of data / VAE reconstructions /
samples), DIR/mix_scores.png, DIR/samples.png and DIR/sample_XX.mp4, and prints the summary. "zoo" reads the shipped
model; a directory reads a job's export (e.g. WORKDIR/export, WORKDIR/export_text of the finetune job).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _load(spec: str, name: str, loader):
    from vggrpo_jax import zoo  # noqa: PLC0415

    if spec == "zoo":
        return zoo.load(name)
    if not os.path.isfile(os.path.join(spec, "manifest.json")):
        raise SystemExit(f"--{name}={spec}: expected 'zoo' or a directory with manifest.json (a job's export)")
    return loader(spec)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--dit", default="zoo")
    p.add_argument("--text", default="zoo")
    p.add_argument("--vae", default="zoo")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--num_data", type=int, default=64)
    p.add_argument("--num_steps", type=int, default=20)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--cfg_scale", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for k in ("num_samples", "num_data", "num_steps"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be ≥ 1")

    from vggrpo_jax.data.toy_text import load_text  # noqa: PLC0415
    from vggrpo_jax.sft.export import load_dit  # noqa: PLC0415
    from vggrpo_jax.sft.mix import mix_report, write_report  # noqa: PLC0415
    from vggrpo_jax.toy_vae.export import load_model  # noqa: PLC0415

    vae, dit, text = _load(a.vae, "vae", load_model), _load(a.dit, "dit", load_dit), _load(a.text, "text", load_text)
    report, samples = mix_report(dit, text, vae, num_samples=a.num_samples, num_data=a.num_data, seed=a.seed,
                                 num_steps=a.num_steps, shift=a.shift, cfg_scale=a.cfg_scale)
    write_report(a.out, report, samples)
    brief = {k: report[k] for k in ("threshold", "threshold_accuracy", "data_jittered_fraction", "latents")}
    brief["sets"] = {k: {"jittery_fraction": v["jittery_fraction"], "median": v["quantiles"]["0.5"]}
                     for k, v in report["sets"].items()}
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
