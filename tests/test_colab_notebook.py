"""notebooks/colab_tpu.ipynb: its structure (fast: generated from notebooks/make_colab_tpu.py, every cell compiles, the
project names and tool flags it uses exist, the wan21 path's configs are valid without a TPU) and its toy path
executed headless with nbclient (slow: a tiny LGM build and two GRPO iterations in a Jupyter kernel)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re

import pytest
from ml_collections import ConfigDict

nbformat = pytest.importorskip("nbformat")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "colab_tpu.ipynb")


def _load_generator():
    from helpers.loading import load_script

    return load_script("notebooks/make_colab_tpu.py")


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(NOTEBOOK, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_the_generators_output(nb):
    nbformat.validate(nb)
    built = _load_generator().build()
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in built.cells], (
        "notebooks/colab_tpu.ipynb is stale: run python notebooks/make_colab_tpu.py")
    assert all(c.cell_type == "code" for c in nb.cells[1:2]) and nb.cells[0].cell_type == "markdown"


def test_mode_switch_and_both_paths(nb):
    first = _code(nb)[0]
    assert re.search(r'^MODE = "auto"', first, re.M), "the first code cell sets MODE"
    text = "\n".join(_code(nb))
    assert 'MODE = "wan21" if ON_TPU else "toy"' in text  # auto: toy without a TPU
    assert '"toy_random.py" if MODE == "toy" else "wan21.py"' in text
    for name in ("toy_random.py", "wan21.py", "lgm_toy.py", "lgm_wan21.py"):
        assert f'"{name}"' in text, name
        assert os.path.isfile(os.path.join(ROOT, "configs", name)), name
    # every downloading / converting cell is guarded by the path (the toy path skips them cleanly)
    for src in _code(nb):
        if "snapshot_download" in src or 'tool("cache_text_embeddings"' in src:
            assert 'if MODE != "wan21":' in src


def test_every_code_cell_compiles(nb):
    for i, src in enumerate(_code(nb)):
        compile(src, f"<notebook code cell {i}>", "exec")


def test_project_imports_exist(nb):
    names = []
    for src in _code(nb):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vggrpo_jax"):
                names += [(node.module, a.name) for a in node.names]
    assert {("vggrpo_jax.grpo.aot", "compile_grpo_iteration"), ("vggrpo_jax.grpo.run", "train"),
            ("vggrpo_jax.training.metrics", "read_metrics")} <= set(names)
    for module, name in names:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_tool_calls_use_existing_tools_and_flags(nb):
    calls = []
    for src in _code(nb):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tool":
                name = node.args[0].value
                flags = [a.value for a in node.args[1:] if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
                calls.append((name, flags))
    assert {n for n, _ in calls} == {"convert_wan", "convert_wan_vae", "convert_umt5", "convert_any4d",
                                     "cache_text_embeddings"}
    for name, flags in calls:
        path = os.path.join(ROOT, "tools", f"{name}.py")
        source = open(path).read()
        declared = set(re.findall(r'add_argument\(\s*((?:"--[\w-]+",?\s*)+)', source))
        declared = {f for group in declared for f in re.findall(r'"(--[\w-]+)"', group)}
        assert declared, path
        assert set(flags) <= declared, f"{name}: {sorted(set(flags) - declared)} not flags of {path}"


def _flat(c, prefix=""):
    out = set()
    for k, v in c.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, ConfigDict) else {prefix + k}
    return out


def test_wan21_configs_are_valid_without_a_tpu(nb, tmp_path):
    """The wan21 path's config cell, run for every candidate shape: no new (misspelled) keys, valid shapes, a valid
    LGM config."""
    from vggrpo_jax.backbones import load_config_file
    from vggrpo_jax.config import _check_shapes, validate_guidance
    from vggrpo_jax.lgm.config import validate_lgm

    (cell,) = [s for s in _code(nb) if "def grpo_config" in s]
    ns = dict(MODE="wan21", ROOT=ROOT, WORK=str(tmp_path), CKPT=str(tmp_path / "ckpt"), WAN_DIR=str(tmp_path / "wan"),
              PROMPTS=str(tmp_path / "p.jsonl"), TEXT_CACHE=str(tmp_path / "tc"), os=os)
    exec(compile(cell, "<config cell>", "exec"), ns)
    for name in ("wan21_vae", "any4d"):  # validate_lgm checks that the checkpoints it names exist
        (tmp_path / "ckpt" / name).mkdir(parents=True)
    base, lgm_base = (load_config_file(os.path.join(ROOT, "configs", n)) for n in ("wan21.py", "lgm_wan21.py"))
    assert len(ns["CANDIDATES"]) >= 2
    for cand in ns["CANDIDATES"]:
        c, lgm = ns["grpo_config"](*cand), ns["lgm_config"](*cand[:3])
        assert _flat(c) == _flat(base)
        variants = lambda keys: {k for k in keys if not k.startswith("stitch.variants.")}  # replaced on purpose
        assert variants(_flat(lgm)) == variants(_flat(lgm_base)) and set(lgm.stitch.variants) == {"conv"}
        _check_shapes(c)
        validate_guidance(c)
        validate_lgm(lgm)
        assert c.rewards.zbuffer == "sort" and c.text.cache_dir and c.dit.checkpoint
        assert c.rl.prompts_per_batch * c.rl.group_size % max(c.rl.micro_batch_size, 1) == 0
        assert (c.vae.to_dict(), c.any4d.to_dict()) == (lgm.vae.to_dict(), lgm.any4d.to_dict())


@pytest.mark.slow
def test_toy_path_runs_headless(tmp_path):
    """Executes the whole notebook on the toy path in a Jupyter kernel: the LGM is built, GRPO runs and evaluates,
    the videos and the reward plot are displayed; no cell fails."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = dict(os.environ)
    os.environ.update(VGGRPO_COLAB_WORK=str(tmp_path), JAX_PLATFORMS="cpu",
                      PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:  # the kernel inherits this environment (8 simulated CPU devices from conftest)
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    outputs = {c.id: c.outputs for c in nb.cells if c.cell_type == "code"}
    text = "\n".join(o.get("text", "") for outs in outputs.values() for o in outs)
    assert "MODE=toy" in text and "toy path: no downloads" in text
    assert re.search(r"rollout\s+peak\s+[\d.]+ MiB", text) and "running at (9, 64, 64, 2, 4, 0)" in text
    summary = json.load(open(tmp_path / "lgm_toy" / "eval.json"))
    assert summary["finished"] is True
    rows = [json.loads(line) for line in open(tmp_path / "run_toy" / "metrics.jsonl")]
    assert {r["step"] for r in rows} >= {1, 2} and any("reward/motion_mean" in r for r in rows)
    displays = [o for outs in outputs.values() for o in outs if o.output_type == "display_data"]
    videos = [o for o in displays if "<video" in o.data.get("text/html", "")]
    assert len(videos) == 2  # eval.num_prompts
    assert sum("image/png" in o.data for o in displays) == 3  # two camera paths and the reward curves
    assert (tmp_path / "run_toy" / "rewards.png").stat().st_size > 0
