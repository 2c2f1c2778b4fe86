#!/usr/bin/env python
"""Pod planning at the released models' native shapes: one full GRPO iteration compiled ahead of time per mesh.

    python benchmarks/pod_plan.py                          # every case below, one subprocess each, resumable
    python benchmarks/pod_plan.py --cases wan21-v5e8-fsdp  # only some (comma list of names)
    python benchmarks/pod_plan.py --list

Each case compiles the trainer's three jitted stages (rollout, LGM rewards, update; vggrpo_jax/trainer_aot.py) on
abstract shapes for a simulated mesh of CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=D, set in a
fresh subprocess per case because the device count is fixed at JAX start-up) and records the per-device peak of each
stage (arguments + outputs + temporaries − aliased, from memory_analysis()). Results are cached in --cache (JSON, one
entry per case) so an interrupted run resumes; --table writes the markdown table. A case that fails to compile (for
example, out of host memory) is recorded with its error and reported as such.

The CPU backend computes bf16 matmuls in f32 and uses the "blocked" attention (the TPU run would use splash), so the
temporaries are an upper bound for a v5e; the argument sizes (weights, LoRA, optimizer) are exact.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The released models' native video shapes: (config file, frames, height, width).
NATIVE = {"wan21": ("configs/wan21.py", 81, 480, 832), "wan22": ("configs/wan22.py", 121, 704, 1280)}


def _cases() -> dict[str, dict]:
    cases = {}

    def add(model, pod, devices, mesh, remat="full", prompts=2, **extra):
        name = f"{model}-{pod}-" + "-".join(f"{k}{v}" for k, v in mesh.items()) + (f"-{remat}" if remat != "full" else "")
        name += "".join(f"-{k.split('.')[-1].replace('_batch_size', '')}{v}" for k, v in extra.items())
        cfg, f, h, w = NATIVE[model]
        cases[name] = dict(config=cfg, frames=f, height=h, width=w, devices=devices, mesh=mesh, remat=remat,
                           prompts=prompts, extra=extra, model=model, pod=pod)

    # P=2 prompts × K=4 = 8 samples per iteration. fsdp=8: one sample per device. context=c with the update
    # micro-batched to 8/c samples: each sample's tokens split over c devices, so activations per device shrink c×.
    for model in ("wan21", "wan22"):
        add(model, "v5e8", 8, {"fsdp": 8})
        add(model, "v5e8", 8, {"fsdp": 4, "context": 2}, **{"rl.micro_batch_size": 4})
        add(model, "v5e16", 16, {"fsdp": 8, "context": 2})
        add(model, "v5e8", 8, {"fsdp": 2, "context": 4}, **{"rl.micro_batch_size": 2})
        add(model, "v5e16", 16, {"fsdp": 4, "context": 4}, **{"rl.micro_batch_size": 4})
    # The 5B update at 121×704×1280 needs the samples split further.
    add("wan22", "v5e16", 16, {"fsdp": 2, "context": 8}, **{"rl.micro_batch_size": 2})
    return cases


def _one(case: dict) -> dict:
    """Compile one case in this process (XLA_FLAGS already set by the parent)."""
    sys.path.insert(0, ROOT)
    from vggrpo_jax.build import load_config_file  # noqa: PLC0415
    from vggrpo_jax.parallel import make_mesh  # noqa: PLC0415
    from vggrpo_jax.trainer_aot import compile_grpo_iteration  # noqa: PLC0415

    c = load_config_file(os.path.join(ROOT, case["config"]))
    c.video.num_frames, c.video.height, c.video.width = case["frames"], case["height"], case["width"]
    c.rl.prompts_per_batch = case["prompts"]
    c.dit.remat_policy = case["remat"]
    for key, value in case["extra"].items():
        section, field = key.split(".")
        c[section][field] = value
    mesh = make_mesh(case["mesh"])
    t0 = time.perf_counter()
    out = compile_grpo_iteration(c, mesh)
    out["compile_s"] = time.perf_counter() - t0
    return out


def _run_case(name: str, case: dict, timeout: float) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={case['devices']}",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode} after {time.perf_counter() - t0:.0f} s: " + " | ".join(tail)}
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict], cases: dict[str, dict]) -> str:
    head = ("| model @ F×H×W | pod | mesh | remat | batch | latent | rollout GiB | rewards GiB | update GiB | "
            "max ≤ 16? | compile s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, case in cases.items():
        if name not in results:
            continue
        r = results[name]
        model = f"{case['model']} @ {case['frames']}×{case['height']}×{case['width']}"
        mesh = "×".join(f"{k}={v}" for k, v in case["mesh"].items())
        if "rl.micro_batch_size" in case["extra"]:
            mesh += f", micro-batch {case['extra']['rl.micro_batch_size']}"
        if "error" in r:
            lines.append(f"| {model} | {case['pod']} | {mesh} | {case['remat']} | {case['prompts'] * 4} | | "
                         f"did not compile: {r['error'][:120]} | | | | |")
            continue
        peaks = [r[s]["peak_gib"] for s in ("rollout", "rewards", "update")]
        lines.append(f"| {model} | {case['pod']} | {mesh} | {case['remat']} | {r['shapes']['batch']} | "
                     f"{'×'.join(map(str, r['shapes']['latent']))} | {peaks[0]:.1f} | {peaks[1]:.1f} | {peaks[2]:.1f} | "
                     f"{'yes' if max(peaks) <= 16 else 'no'} | {r['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="", help="comma list of case names (default: all)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "vggrpo_pod_plan.json"),
                   help="results so far, one entry per case (an interrupted run resumes from it)")
    p.add_argument("--table", default="", help="write the markdown table here (default: print only)")
    p.add_argument("--timeout", type=float, default=3 * 3600)
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return
    cases = _cases()
    if args.list:
        print("\n".join(cases))
        return
    wanted = [n for n in args.cases.split(",") if n] or list(cases)
    unknown = [n for n in wanted if n not in cases]
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; known: {list(cases)}")
    results = json.load(open(args.cache)) if os.path.exists(args.cache) else {}
    for name in wanted:
        if name in results and not ("error" in results[name] and args.retry_failed):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] compiling {name} ...", flush=True)
        results[name] = _run_case(name, cases[name], args.timeout)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(results[name])[:400]}", flush=True)
        with open(args.cache + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.cache + ".tmp", args.cache)
    md = table(results, cases)
    print(md)
    if args.table:
        with open(args.table, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
