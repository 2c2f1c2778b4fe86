#!/usr/bin/env python
"""Writes notebooks/colab_tpu.ipynb (the Colab TPU notebook) from the cells below; edit here, then run

    python notebooks/make_colab_tpu.py

The notebook runs VGGRPO end to end on one chip: install, checkpoints (download + the converters in tools/), the text
embedding cache, the AOT memory of each GRPO stage, a small LGM, GRPO, then videos and reward curves. MODE picks the
path: "wan21" (Wan2.1-T2V-1.3B + Any4D on a Colab TPU v5e-1, 16 GiB HBM) or "toy" (configs/toy_random.py at a tiny size, on
any CPU; tests/test_colab_notebook.py executes it headless). Cells that need internet or a TPU say so and skip on the
toy path.
"""
from __future__ import annotations

import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "colab_tpu.ipynb")

CELLS: list[tuple[str, str]] = []


def md(text: str) -> None:
    CELLS.append(("markdown", text.strip("\n")))


def code(text: str) -> None:
    CELLS.append(("code", text.strip("\n")))


md("""
# VGGRPO on a Colab TPU (v5e-1)

Post-trains **Wan2.1-T2V-1.3B** with Flow-GRPO in latent space, rewarded by a **Latent Geometry Model** (Any4D
stitched onto the Wan VAE latents) for camera-motion smoothness and 4D reprojection consistency.

Two paths run the same cells:
- `MODE = "wan21"`: Runtime → *Change runtime type* → **TPU v5e-1** (one chip, 16 GiB HBM). Downloads and converts
  the real checkpoints (~30 GB download, about an hour of setup), builds a small LGM, runs a short GRPO.
- `MODE = "toy"`: any CPU. The project's random tiny world (`configs/toy_random.py`) at a tiny size: the same steps
  in a few minutes. Cells that need internet or a TPU are skipped.

`MODE = "auto"` picks `"wan21"` on a TPU runtime and `"toy"` otherwise.
""")

code("""
import os
import tempfile

MODE = "auto"  # "toy" | "wan21" | "auto" (wan21 when a TPU is attached, else toy)
# Where vggrpo_jax is installed from when it is not importable yet (a fresh Colab runtime): its git URL.
REPO_URL = os.environ.get("VGGRPO_REPO_URL", "")
WORK = os.environ.get("VGGRPO_COLAB_WORK") or ("/content/vggrpo" if os.path.isdir("/content")
                                                 else os.path.join(tempfile.gettempdir(), "vggrpo_colab"))
os.makedirs(WORK, exist_ok=True)
print("work directory:", WORK)
""")

md("""
## 1. Install

Installs `vggrpo_jax` (editable, so `configs/` and `tools/` come with it) from `REPO_URL` unless it is already
importable, e.g. when this notebook runs from a checkout. Jobs that need the chip run in this kernel; the checkpoint
tools run as subprocesses *before* the kernel first touches JAX, because only one process can own a TPU.
""")

code("""
import importlib.util
import subprocess
import sys


def sh(*cmd, env=None):
    \"\"\"Runs a command, streaming its output; raises with the command line if it fails.\"\"\"
    print("$", " ".join(map(str, cmd)), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=None if env is None else {**os.environ, **env})
    for line in proc.stdout:
        print(line, end="", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {' '.join(map(str, cmd))}")


if importlib.util.find_spec("vggrpo_jax") is None:
    if not REPO_URL:
        raise RuntimeError("vggrpo_jax is not installed: set REPO_URL (or the VGGRPO_REPO_URL variable) to the "
                           "project's git URL in the first cell")
    src = os.path.join(WORK, "src")
    if not os.path.isdir(src):
        sh("git", "clone", "--depth=1", REPO_URL, src)
    tpu_runtime = any(os.path.exists(p) for p in ("/dev/accel0", "/dev/vfio/0")) or "TPU_NAME" in os.environ
    sh(sys.executable, "-m", "pip", "install", "-q", "-e", src + ("[tpu]" if tpu_runtime else ""))
    sys.path.insert(0, src)  # the editable install's path hook is not seen by an already running kernel

import vggrpo_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(vggrpo_jax.__file__)))
if not os.path.isdir(os.path.join(ROOT, "tools")):
    raise RuntimeError(f"{ROOT}: not a vggrpo_jax checkout (no tools/); install it editable (pip install -e)")
print("vggrpo_jax from", ROOT)
""")

md("""
## 2. Pick the path

The backend is probed in a subprocess, so this kernel does not hold the TPU while the tools below run.
""")

code("""
import json
import socket

probe = subprocess.run([sys.executable, "-c", "import jax, json; d = jax.devices()[0]; "
                        "print(json.dumps([jax.default_backend(), d.device_kind, len(jax.devices())]))"],
                       capture_output=True, text=True)
if probe.returncode != 0:
    raise RuntimeError("JAX could not start in this runtime:\\n" + probe.stderr[-2000:])
BACKEND, DEVICE_KIND, NUM_DEVICES = json.loads(probe.stdout.strip().splitlines()[-1])
ON_TPU = BACKEND == "tpu"
if MODE == "auto":
    MODE = "wan21" if ON_TPU else "toy"
if MODE not in ("toy", "wan21"):
    raise ValueError(f"MODE={MODE!r}: must be 'toy', 'wan21' or 'auto'")
if MODE == "wan21" and not ON_TPU:
    raise RuntimeError(f"MODE='wan21' needs a TPU runtime (this one runs {BACKEND}: {DEVICE_KIND}); use MODE='toy'")


def online(host="huggingface.co", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


HAVE_INTERNET = MODE == "wan21" and online()  # only the wan21 path downloads anything
print(f"MODE={MODE}  backend={BACKEND} ({DEVICE_KIND} × {NUM_DEVICES})  internet={HAVE_INTERNET}")
""")

md("""
## 3. Download and convert the checkpoints *(wan21 only, needs internet)*

Wan2.1-T2V-1.3B (diffusers layout: DiT, VAE, UMT5-XXL text encoder, tokenizer) and the released Any4D checkpoint,
converted with the project's strict converters (`tools/convert_*.py`: any missing, unexpected or mis-shaped key
aborts with the full list). The converters run on the CPU (`JAX_PLATFORMS=cpu`); a converted checkpoint is kept and
not converted again.
""")

code("""
CKPT = os.path.join(WORK, "ckpt")
WAN_REPO, ANY4D_REPO, ANY4D_FILE = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "airlabshare/any4d-checkpoint", "any4d_4v_combined.pth"
WAN_DIR = os.path.join(WORK, "Wan2.1-T2V-1.3B-Diffusers")
CPU = {"JAX_PLATFORMS": "cpu"}


def tool(name, *args, env=CPU):
    \"\"\"python tools/<name>.py ARGS (the project's tools, unchanged).\"\"\"
    sh(sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *args, env=env)


if MODE != "wan21":
    print("toy path: no downloads; the toy config builds or loads its own tiny models")
else:
    converted = {n: os.path.join(CKPT, n) for n in ("wan21_dit", "wan21_vae", "umt5", "any4d")}
    if not all(os.path.exists(p) for p in converted.values()):
        if not HAVE_INTERNET:
            raise RuntimeError("the checkpoints are not converted yet and huggingface.co is unreachable")
        try:
            import torch  # noqa: F401  (the converters read .pth / safetensors through torch)
        except ImportError:
            sh(sys.executable, "-m", "pip", "install", "-q", "torch", "--index-url", "https://download.pytorch.org/whl/cpu")
        from huggingface_hub import hf_hub_download, snapshot_download

        snapshot_download(WAN_REPO, local_dir=WAN_DIR,
                          allow_patterns=["model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*"])
        any4d_pth = hf_hub_download(ANY4D_REPO, ANY4D_FILE, local_dir=os.path.join(WORK, "any4d"))
        if not os.path.exists(converted["wan21_dit"]):
            tool("convert_wan", "--src", f"{WAN_DIR}/transformer", "--dst", converted["wan21_dit"], "--dtype", "bfloat16")
        if not os.path.exists(converted["wan21_vae"]):
            tool("convert_wan_vae", "--src", f"{WAN_DIR}/vae", "--dst", converted["wan21_vae"])
        if not os.path.exists(converted["umt5"]):
            tool("convert_umt5", "--src", f"{WAN_DIR}/text_encoder", "--dst", converted["umt5"], "--dtype", "bfloat16")
        if not os.path.exists(converted["any4d"]):
            tool("convert_any4d", "--src", any4d_pth, "--dst", converted["any4d"], "--preset", "full")
    print("converted:", converted)
""")

md("""
## 4. Text embeddings, computed once

UMT5-XXL has 5.7B parameters (11 GiB in bf16): next to the DiT it would not fit in 16 GiB. The prompts' embeddings
are computed once here (on the chip, before this kernel takes it) into an on-disk cache; a run whose prompts are
all cached serves them from the cache and never loads the encoder. The compute dtype must be the training config's
`text.dtype` (bf16), since it is part of the cache's identity.
""")

code("""
PROMPTS = os.path.join(WORK, "prompts.jsonl")
TEXT_CACHE = os.path.join(WORK, "text_cache")
CAMERA_PROMPTS = [
    ("a slow dolly forward through a quiet library with tall wooden shelves", "static"),
    ("the camera orbits a stone fountain in a sunny town square", "static"),
    ("an aerial shot gliding over snowy mountain ridges at sunrise", "static"),
    ("a handheld walk down a narrow alley with hanging lanterns at night", "static"),
    ("a cyclist rides along a coastal road, the camera tracking beside her", "dynamic"),
    ("waves roll onto a rocky beach as the camera pans left", "dynamic"),
    ("a red car drives through a forest road, followed by a drone", "dynamic"),
    ("a dog runs across a green meadow, the camera following low", "dynamic"),
]
if MODE != "wan21":
    print("toy path: the toy text encoder is tiny; the run caches its embeddings itself in text.cache_dir")
else:
    with open(PROMPTS, "w") as fh:
        for text, split in CAMERA_PROMPTS:
            fh.write(json.dumps({"prompt": text, "split": split}) + "\\n")
    # On the TPU (no JAX_PLATFORMS=cpu): this subprocess owns the chip until it exits.
    tool("cache_text_embeddings", "--prompts", PROMPTS, "--tokenizer", f"{WAN_DIR}/tokenizer",
         "--encoder", os.path.join(CKPT, "umt5"), "--out", TEXT_CACHE, "--compute-dtype", "bfloat16", env=None)
""")

md("""
## 5. Configs, and the AOT memory of each GRPO stage on this chip

From here on this kernel owns the accelerator. Both paths start from the project's configs (`configs/toy_random.py`,
`configs/wan21.py`, `configs/lgm_*.py`) and shrink them. For wan21 each candidate shape's GRPO iteration
(rollout → LGM rewards → update) is compiled ahead of time on abstract shapes (`vggrpo_jax.grpo.aot`, no weights
allocated) and the first one whose every stage fits the chip's memory is used. On the CPU backend (an upper bound:
f32 matmuls, no splash attention) the first candidate, 33×240×416 with K=4, compiles to rollout 10.2, rewards 5.9
and update 11.6 GiB, 12.5 GiB all resident (`python benchmarks/colab_aot.py`).
""")

code("""
from vggrpo_jax.backbones import load_config_file

RUN = os.path.join(WORK, f"run_{MODE}")
LGM_DIR = os.path.join(WORK, f"lgm_{MODE}")


def lgm_config(frames, height, width):
    \"\"\"A small LGM: one stitch layer, the single-conv connector, short stitching and alignment on toyworld clips.\"\"\"
    l = load_config_file(os.path.join(ROOT, "configs", "lgm_toy.py" if MODE == "toy" else "lgm_wan21.py"))
    l.data.num_frames, l.data.height, l.data.width = frames, height, width
    l.stitch.variants = {"conv": {}}
    l.train.progress = False
    if MODE == "toy":
        l.data.toyworld.num_clips, l.data.heldout_fraction = 12, 1 / 6
        l.stitch.layers, l.stitch.steps, l.align.steps = [2], 10, 10
        l.eval.max_clips, l.train.save_every, l.train.log_every = 2, 10, 5
    else:
        l.vae.checkpoint, l.any4d.checkpoint = os.path.join(CKPT, "wan21_vae"), os.path.join(CKPT, "any4d")
        l.any4d.dtype = "bfloat16"  # frozen teacher in bf16; its LoRA and the connector train in fp32
        l.data.toyworld.num_clips, l.data.toyworld.checker_size, l.data.heldout_fraction = 64, 0.5, 1 / 8
        l.data.batch_size = l.stitch.batch_size = l.align.batch_size = l.eval.batch_size = 1
        l.stitch.layers, l.stitch.steps, l.align.steps = [12], 200, 300
        l.eval.max_clips, l.train.save_every, l.train.log_every = 8, 100, 20
    return l


def grpo_config(frames, height, width, prompts_per_batch, group_size, micro_batch):
    c = load_config_file(os.path.join(ROOT, "configs", "toy_random.py" if MODE == "toy" else "wan21.py"))
    c.video.num_frames, c.video.height, c.video.width = frames, height, width
    c.rl.prompts_per_batch, c.rl.group_size, c.rl.micro_batch_size = prompts_per_batch, group_size, micro_batch
    l = lgm_config(frames, height, width)
    c.vae.update(l.vae)  # the GRPO run loads the VAE and Any4D that the LGM was built on
    c.any4d.update(l.any4d)
    c.lgm.checkpoint, c.lgm.build_config = os.path.join(LGM_DIR, "lgm"), ""
    c.text.cache_dir = TEXT_CACHE if MODE == "wan21" else os.path.join(WORK, "toy_text_cache")
    c.train.log_every = 1
    if MODE == "toy":
        c.prompts.toyworld_count = 8
        c.rl.num_steps, c.eval.num_steps, c.eval.num_prompts = 4, 4, 2
        c.train.num_iterations = c.train.checkpoint_every = c.eval.every = 2
    else:
        c.dit.checkpoint = os.path.join(CKPT, "wan21_dit")
        c.text.tokenizer, c.text.checkpoint = f"{WAN_DIR}/tokenizer", os.path.join(CKPT, "umt5")
        c.prompts.path = c.prompts.eval_path = PROMPTS
        c.rewards.zbuffer = "sort"  # no scatters on TPU (README: which z-buffer path on which backend)
        c.rl.num_steps, c.eval.num_steps, c.eval.num_prompts = 16, 30, 2
        c.eval.rgb_rewards = False  # the RGB Any4D path at full resolution is not part of the AOT plan above
        c.train.num_iterations, c.train.checkpoint_every, c.eval.every = 30, 10, 15
    return c


def resident_gib(stats):
    \"\"\"Upper bound of the device memory a run holds: what the stages keep between them (frozen DiT, adapters,
    optimizer state, LGM) plus the largest working set of one stage.\"\"\"
    kept = max(stats["rollout"]["argument_gib"], stats["update"]["argument_gib"]) + stats["rewards"]["argument_gib"]
    return kept + max(stats[s]["temp_gib"] + stats[s]["output_gib"] for s in ("rollout", "rewards", "update"))


# (frames, height, width, prompts per iteration, group size K, update micro-batch), most ambitious first.
CANDIDATES = ([(9, 64, 64, 2, 4, 0)] if MODE == "toy" else
              [(33, 240, 416, 1, 4, 1), (17, 240, 416, 1, 4, 1), (17, 192, 336, 1, 4, 1)])
""")

code("""
import jax

from vggrpo_jax.grpo.aot import compile_grpo_iteration
from vggrpo_jax.parallel import make_mesh

devices = jax.devices()
HBM_GIB = (devices[0].memory_stats() or {}).get("bytes_limit", 0) / 1024**3
print(f"{len(devices)} × {devices[0].device_kind}" + (f", {HBM_GIB:.1f} GiB each" if HBM_GIB else ""))
LIMIT_GIB = 0.92 * HBM_GIB if (ON_TPU and HBM_GIB) else float("inf")  # leave room for XLA's own buffers
plans = []
for cand in CANDIDATES:
    config = grpo_config(*cand)
    mesh = make_mesh(config.mesh)
    stats = compile_grpo_iteration(config, mesh, stitch_layer=min(lgm_config(*cand[:3]).stitch.layers))
    resident = resident_gib(stats)
    plans.append((cand, stats, resident))
    print(f"{cand[0]}×{cand[1]}×{cand[2]}, {cand[3] * cand[4]} samples, latent {stats['shapes']['latent']}:")
    for s in ("rollout", "rewards", "update"):
        st = stats[s]
        print(f"  {s:8s} peak {st['peak_gib'] * 1024:9.1f} MiB  (arguments {st['argument_gib'] * 1024:.1f}, "
              f"temporaries {st['temp_gib'] * 1024:.1f})  {st['flops'] / 1e9:10.2f} GFLOP")
    print(f"  all resident (upper bound): {resident * 1024:.1f} MiB; limit {LIMIT_GIB * 1024:.0f} MiB")
    if resident <= LIMIT_GIB:
        break
else:
    raise RuntimeError(f"no candidate shape fits {LIMIT_GIB:.1f} GiB; see the figures above")
SHAPE, STATS, _ = plans[-1]
print("running at", SHAPE)
""")

md("""
## 6. Build a small Latent Geometry Model

Stitching search (which Any4D layer the connector replaces) and alignment fine-tuning (connector + Any4D LoRA) on
synthetic toyworld clips with exact geometry, at the training shape. Short here; the full recipe is
`python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py` on real videos.
""")

code("""
from vggrpo_jax.lgm.pipeline import run as build_lgm

if os.path.isfile(os.path.join(LGM_DIR, "lgm", "lgm.json")):
    print("LGM already built in", LGM_DIR)
else:
    summary = build_lgm(lgm_config(*SHAPE[:3]), LGM_DIR)
    print(json.dumps(summary, indent=1, default=str)[:2000])
""")

md("""
## 7. GRPO

SDE rollouts of K samples per prompt, both latent rewards from the LGM (r_motion, r_geo), group advantages, the
clipped GRPO update on the LoRA adapters, EMA; evaluation writes mp4 samples. Re-running this cell resumes from the
newest checkpoint in the run directory.
""")

code("""
from vggrpo_jax.grpo.run import train

history = train(grpo_config(*SHAPE), RUN)
print(f"{len(history)} iterations run; workdir {RUN}")
""")

md("""
## 8. Samples and rewards
""")

code("""
import glob

from IPython.display import Image, Video, display

steps = sorted(glob.glob(os.path.join(RUN, "samples", "step_*")))
if not steps:
    raise RuntimeError(f"no evaluation samples under {RUN}/samples")
print("samples of", os.path.basename(steps[-1]))
shown = int(grpo_config(*SHAPE).eval.num_prompts)  # the sample batch is padded to a multiple of the devices
for mp4 in sorted(glob.glob(os.path.join(steps[-1], "*.mp4")), key=lambda p: int(os.path.basename(p)[:-4]))[:shown]:
    display(Video(mp4, embed=True, width=320, html_attributes="controls loop autoplay muted"))
    camera = mp4[: -len(".mp4")] + "_camera.png"
    if os.path.exists(camera):
        display(Image(camera, width=320))
""")

code("""
import math

import matplotlib.pyplot as plt

from vggrpo_jax.training.metrics import read_metrics

rows = read_metrics(RUN)
# Training: the group mean of each reward per iteration; evaluation (EMA adapters, ODE samples): the LGM's rewards
# on the latents and, where computed, the Any4D RGB path's on the decoded video.
curves = [k for k in ("reward/motion_mean", "reward/geo_mean", "eval/latent_motion", "eval/latent_geo",
                      "eval/rgb_motion", "eval/rgb_geo") if any(k in r for r in rows)]
if not curves:
    raise RuntimeError(f"{RUN}/metrics.jsonl has no reward metrics")
fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.6), squeeze=False)
for ax, key in zip(axes[0], curves):
    pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]  # −inf: an empty point cloud
    if pts:
        ax.plot(*zip(*pts), marker="o")
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("iteration")
fig.tight_layout()
fig.savefig(os.path.join(RUN, "rewards.png"), dpi=100)
plt.close(fig)
display(Image(os.path.join(RUN, "rewards.png")))  # a saved PNG shows under any matplotlib backend
""")


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "TPU",
        "colab": {"provenance": [], "gpuType": "V5E1"},
    })
    nb.cells = [nbformat.v4.new_markdown_cell(t) if kind == "markdown" else nbformat.v4.new_code_cell(t)
                for kind, t in CELLS]
    for i, cell in enumerate(nb.cells):  # fixed ids: regenerating an unchanged notebook gives the same file
        cell.id = f"cell-{i:02d}"
    return nb


if __name__ == "__main__":
    notebook = build()
    nbformat.validate(notebook)
    nbformat.write(notebook, OUT)
    print(f"wrote {OUT} ({len(notebook.cells)} cells)")
