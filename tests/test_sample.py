"""`python -m vggrpo_jax.sample` and tools/guidance_sweep.py at the toy config (tiny random models, a saved unfitted
LGM).

A GRPO checkpoint with non-zero EMA adapters is written through the trainer's own state layout. In process, the job
samples it and the base model from the same noise (files and jsonl fields checked; the videos must differ); the
slow tests run the CLI as a user does, with LGM guidance on, and the guidance sweep tool.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red cube on a checkered floor, the camera moves forward", "two spheres, the camera pans left",
           "a blue cylinder, the camera orbits"]


@pytest.fixture(scope="module")
def lgm_dir(tmp_path_factory):
    from vggrpo_jax import backbones as build
    from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
    from vggrpo_jax.lgm.model import LatentGeometryModel, save_lgm

    c = build.load_config_file(os.path.join(ROOT, "configs", "lgm_toy.py"))
    any4d = build.build_any4d(c)
    vae = build.build_vae(c)
    connector = build_connector(ConnectorConfig(), latent_channels=int(vae.config.z_dim), any4d_config=any4d.config,
                                stitch_layer=2, seed=5)
    path = str(tmp_path_factory.mktemp("lgm") / "lgm")
    save_lgm(path, LatentGeometryModel(connector, any4d))
    return path


OVERRIDES = {"lgm.build_config": "", "eval.num_steps": 3}


def _config(lgm_dir):
    from vggrpo_jax import backbones as build

    c = build.load_config_file(os.path.join(ROOT, "configs", "toy_random.py"))
    c.lgm.checkpoint = lgm_dir
    for key, value in OVERRIDES.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def _write_checkpoint(config, workdir, step):
    """A GRPO checkpoint at `step` whose EMA adapters are non-zero (the trainer's own state layout)."""
    from vggrpo_jax.sampling import SamplingJob
    from vggrpo_jax.training import Checkpointer

    job = SamplingJob(config, workdir, 3, PROMPTS)
    state = job.trainer.init_state()
    leaves, treedef = jax.tree.flatten(state.ema_params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    ema = jax.tree.unflatten(treedef, [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    state = state.replace(ema_params=ema)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
    ckpt.save(step, state, {"data": {}, "iteration": step})
    ckpt.close()


def _check_rows(rows, out, checkpoint, step, seed=11):
    from vggrpo_jax.data.video import read_video

    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["prompt"] for r in rows] == PROMPTS
    for i, r in enumerate(rows):
        assert r["seed"] == seed and r["checkpoint"] == checkpoint and r["step"] == step and r["num_steps"] == 3
        assert r["video"] == f"{i:06d}.mp4"
        assert set(r["lgm"]) == {"motion", "geo", "e_trans", "e_rot"}
        assert 0.0 <= r["lgm"]["motion"] <= 1.0
        assert read_video(str(out / r["video"])).shape == (3, 9, 64, 64)


def test_sample_job_base_and_trained_adapters_differ(lgm_dir, tmp_path):
    """In process on 8 devices: `latest` (non-zero EMA adapters) and `base` from the same noise give other videos."""
    from vggrpo_jax.data.video import read_video
    from vggrpo_jax.sampling import sample

    workdir = tmp_path / "run"
    config = _config(lgm_dir)
    _write_checkpoint(config, str(workdir), step=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["# toy prompts"] + PROMPTS) + "\n")
    trained = sample(config, str(workdir), "latest", str(prompts), str(tmp_path / "trained"), seed=11, num_steps=3)
    base = sample(config, str(workdir), "base", str(prompts), str(tmp_path / "base"), seed=11, num_steps=3)
    for rows, name, ckpt, step in ((trained, "trained", "latest", 3), (base, "base", "base", None)):
        on_disk = [json.loads(line) for line in open(tmp_path / name / "samples.jsonl")]
        assert on_disk == json.loads(json.dumps(rows))
        _check_rows(on_disk, tmp_path / name, ckpt, step)
        assert all(r["guidance"]["scale"] == 0.0 for r in rows)
    for i in range(3):
        a = read_video(str(tmp_path / "trained" / f"{i:06d}.mp4"))
        b = read_video(str(tmp_path / "base" / f"{i:06d}.mp4"))
        assert np.abs(a - b).mean() > 1e-2, i


@pytest.mark.slow
def test_sample_cli_end_to_end_with_guidance(lgm_dir, tmp_path):
    """`python -m vggrpo_jax.sample` as a user runs it (one CPU device), LGM guidance on."""
    workdir = tmp_path / "run"
    _write_checkpoint(_config(lgm_dir), str(workdir), step=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["# toy prompts"] + PROMPTS) + "\n")
    out = tmp_path / "trained"
    cmd = [sys.executable, "-m", "vggrpo_jax.sample", "--config=configs/toy_random.py", f"--workdir={workdir}",
           "--checkpoint=3", f"--prompts={prompts}", f"--out={out}", "--seed=11", "--num_steps=3",
           "--batch_size=2", f"--config.lgm.checkpoint={lgm_dir}", "--config.lgm.build_config=",
           "--config.guidance.scale=0.5", "--config.guidance.steps=1,2", "--config.guidance.weights.geo=0"]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a user's single CPU device
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    _check_rows(rows, out, 3, 3)
    for r in rows:
        assert r["guidance"]["scale"] == 0.5 and r["guidance"]["steps"] == [1, 2]
        assert r["guidance"]["weights"] == {"motion": 1.0, "geo": 0.0}
        assert r["guidance_skipped_steps"] == 0


def test_sample_errors_name_the_flag_or_key(lgm_dir, tmp_path):
    from vggrpo_jax.sampling import sample

    prompts = tmp_path / "p.txt"
    prompts.write_text("one prompt\n")
    c = _config(lgm_dir)
    with pytest.raises(ValueError, match="--checkpoint='last'"):
        sample(c, str(tmp_path), "last", str(prompts), str(tmp_path / "o"), 0)
    with pytest.raises(FileNotFoundError, match="--checkpoint=latest: no checkpoint"):
        sample(c, str(tmp_path), "latest", str(prompts), str(tmp_path / "o"), 0)
    os.makedirs(tmp_path / "checkpoints" / "4")
    with pytest.raises(FileNotFoundError, match=r"--checkpoint=7: .* holds steps \[4\]"):
        sample(c, str(tmp_path), 7, str(prompts), str(tmp_path / "o"), 0)
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        sample(c, str(tmp_path), "base", str(tmp_path / "nothing.txt"), str(tmp_path / "o"), 0)
    for key, value, match in (("schedule", "cosine", "config.guidance.schedule='cosine'"),
                              ("scale", -1.0, "config.guidance.scale=-1.0"),
                              ("steps", "5", r"config.guidance.steps='5': steps \[5\] lie outside 0..2"),
                              ("clip", float("nan"), "config.guidance.clip=nan")):
        c = _config(lgm_dir)
        c.guidance[key] = value
        with pytest.raises(ValueError, match=match):
            sample(c, str(tmp_path), "base", str(prompts), str(tmp_path / "o"), 0, num_steps=3)
    c = _config(lgm_dir)
    c.guidance.weights = {"motion": 1.0, "jitter": 1.0}
    with pytest.raises(ValueError, match=r"config.guidance.weights=.*unknown rewards \['jitter'\]"):
        sample(c, str(tmp_path), "base", str(prompts), str(tmp_path / "o"), 0)
    assert not os.path.exists(tmp_path / "o")  # nothing was started


@pytest.mark.slow
def test_guidance_sweep_tool_writes_metrics_plot_and_cost(lgm_dir, tmp_path):
    """tools/guidance_sweep.py at tiny size: every setting scored on the same prompts and noise, files written."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        from guidance_sweep import MANIFOLD, sweep  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    config = _config(lgm_dir)
    # Guide r_motion on the last step (the unfitted LGM's r_geo is −inf on these samples) with the gradient taken
    # at x̂0 (through_model=False): then z0 = x̂0 + σ·s·g·clip(∇r), a small step up r_motion for every sample.
    config.guidance.steps = "1"
    config.guidance.weights.geo = 0.0
    config.guidance.through_model = False
    out = tmp_path / "sweep"
    result = sweep(config, str(tmp_path / "run"), str(out), ["base"], [0.0, 0.05], num_prompts=8, num_steps=2,
                   seed=3)
    assert set(result["summary"]) == {"base@s=0", "base@s=0.05"}
    assert result["cost_vs_unguided"]["base@s=0"] == 1.0 and result["seconds_per_sample"]["base@s=0.05"] > 0
    rows = [json.loads(line) for line in open(out / "records.jsonl")]
    assert len(rows) == 16 and [r["seed"] for r in rows[:8]] == list(range(8))
    for r in rows:
        assert {"rgb_motion", "rgb_geo", "rgb_e_trans", "rgb_e_rot", "epi_sampson", "latent_motion",
                *MANIFOLD} <= set(r)
    # Same prompts and noise in both settings; guidance changed the samples.
    assert [r["prompt"] for r in rows[:8]] == [r["prompt"] for r in rows[8:]]
    assert all(a["guidance_skipped_steps"] == 0 for a in rows)
    gains = [b["latent_motion"] - a["latent_motion"] for a, b in zip(rows[:8], rows[8:])]
    assert all(g > 0 for g in gains), gains
    for name in ("sweep.png", "sweep.md", "sweep.json", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0
