#!/usr/bin/env python
"""AOT memory of the Colab notebook's wan21 candidates (notebooks/colab_tpu.ipynb) on one simulated CPU device.

    python benchmarks/colab_aot.py [--candidates 2]

Runs the notebook's own config cell (MODE="wan21", no checkpoints needed: everything is abstract) and compiles one
GRPO iteration per candidate shape with vggrpo_jax.grpo.aot, printing the per-stage peaks and the notebook's
"all resident" bound. The CPU backend computes bf16 matmuls in f32 and runs the blocked attention, so the temporaries
are an upper bound for a v5e chip; the notebook prints the chip's own figures before it trains.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=0, help="compile only the first N candidates (0: all)")
    args = p.parse_args()
    import nbformat  # noqa: PLC0415

    from vggrpo_jax.grpo.aot import compile_grpo_iteration  # noqa: PLC0415
    from vggrpo_jax.parallel import make_mesh  # noqa: PLC0415

    nb = nbformat.read(os.path.join(ROOT, "notebooks", "colab_tpu.ipynb"), as_version=4)
    (cell,) = [c.source for c in nb.cells if c.cell_type == "code" and "def grpo_config" in c.source]
    work = tempfile.mkdtemp()
    ns = dict(MODE="wan21", ROOT=ROOT, WORK=work, CKPT=f"{work}/ckpt", WAN_DIR=f"{work}/wan", PROMPTS=f"{work}/p.jsonl",
              TEXT_CACHE=f"{work}/text", os=os)
    exec(compile(cell, "<notebook config cell>", "exec"), ns)
    candidates = ns["CANDIDATES"][: args.candidates or None]
    for cand in candidates:
        c = ns["grpo_config"](*cand)
        t0 = time.perf_counter()
        st = compile_grpo_iteration(c, make_mesh(c.mesh), stitch_layer=min(ns["lgm_config"](*cand[:3]).stitch.layers))
        resident = ns["resident_gib"](st)
        print(json.dumps({"shape F×H×W": "×".join(map(str, cand[:3])), "samples": cand[3] * cand[4],
                          "micro_batch": cand[5], "compile_s": round(time.perf_counter() - t0),
                          **{f"{s}_peak_gib": round(st[s]["peak_gib"], 2) for s in ("rollout", "rewards", "update")},
                          "resident_gib": round(resident, 2)}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
