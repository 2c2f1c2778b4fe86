"""The GRPO trainer end to end at toy scale: first-step identities, exact resume, and the README command.

A tiny LGM (tiny Any4D + an unfitted connector: a valid latents → geometry function) is saved once per module, so the
in-process tests do not pay for an LGM fit; the README-command test builds its LGM through train_lgm like a user.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vggrpo_jax.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = os.path.join(ROOT, "tests", "helpers")


def _lgm_config():
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    try:
        from lgm_toy import get_config  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    return get_config()


@pytest.fixture(scope="module")
def lgm_dir(tmp_path_factory):
    from vggrpo_jax import backbones as build
    from vggrpo_jax.lgm.connector import ConnectorConfig, build_connector
    from vggrpo_jax.lgm.model import LatentGeometryModel, save_lgm

    c = _lgm_config()
    vae = build.build_vae(c)
    any4d = build.build_any4d(c)
    connector = build_connector(ConnectorConfig(), latent_channels=int(vae.config.z_dim), any4d_config=any4d.config,
                                stitch_layer=2, seed=5)
    path = str(tmp_path_factory.mktemp("lgm") / "lgm")
    save_lgm(path, LatentGeometryModel(connector, any4d))
    return path


def _config(lgm_dir, iterations):
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    try:
        from toy_random import get_config  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    c = get_config()
    lgm = _lgm_config()
    # The saved LGM sits on the tiny VAE / Any4D of configs/lgm_toy.py: use the same sections and seed.
    c.seed = lgm.seed
    for key in ("preset", "dtype", "lora_rank", "lora_alpha"):
        c.any4d[key] = lgm.any4d[key]
    c.vae.preset = lgm.vae.preset
    c.lgm.build_config = ""
    c.lgm.checkpoint = lgm_dir
    c.prompts.toyworld_count = 8
    c.rl.num_steps = 4
    c.eval.every = 0
    c.train.num_iterations = iterations
    c.train.checkpoint_every = 2
    return c


def test_resume_repeats_the_uninterrupted_run_exactly(lgm_dir, tmp_path):
    from vggrpo_jax.training import read_metrics
    from vggrpo_jax.train import train

    profiled = _config(lgm_dir, 4)
    profiled.train.profile_steps = 1  # a trace of iteration 2 (the first compiles); changes no number
    full = train(profiled, str(tmp_path / "full"))
    traces = [n for _, _, names in os.walk(tmp_path / "full" / "profile") for n in names]
    assert any(n.endswith(".xplane.pb") for n in traces), traces
    train(_config(lgm_dir, 2), str(tmp_path / "resumed"))  # "preempted" after iteration 2 (checkpointed)
    rest = train(_config(lgm_dir, 4), str(tmp_path / "resumed"))
    assert [m["step"] for m in rest] == [3, 4]
    for a, b in zip(full[2:], rest):
        for key in a:
            assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), (key, a[key], b[key])
    rows = read_metrics(str(tmp_path / "resumed"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # step time, throughput and the seconds of each stage, logged with every iteration
        for key in ("step", "samples_per_second", "rollout", "rewards", "update"):
            name = f"perf/{key}" if key == "samples_per_second" else f"perf/{key}_seconds"
            assert r[name] > 0, (name, r)
        assert r["perf/step_seconds"] >= r["perf/rollout_seconds"] + r["perf/update_seconds"]

    # First iteration: one update per rollout batch, so the policy that sampled is the one trained: ratio 1 (up to
    # the last ulp: rollout and update are separate XLA programs) and nothing clipped; with LoRA B = 0 the policy is
    # the reference, so KL vanishes.
    first = full[0]
    assert abs(first["train/ratio_min"] - 1.0) <= 1e-6 and abs(first["train/ratio_max"] - 1.0) <= 1e-6
    assert first["train/clipfrac"] == 0.0
    assert first["train/kl"] <= 1e-10
    assert first["train/skipped"] == 0.0
    # The update moved the adapters, so by iteration 2 the policy differs from the reference.
    assert full[1]["train/kl"] > 0.0
    for m in full:
        for name in ("motion", "geo"):
            assert np.isfinite(m[f"reward/{name}_mean"])
        assert 0.0 <= m["reward/motion_mean"] <= 1.0


def test_missing_checkpoints_and_prompts_fail_clearly(lgm_dir, tmp_path):
    from vggrpo_jax.train import train

    c = _config(lgm_dir, 1)
    c.allow_random_init = False
    with pytest.raises(ValueError, match="config.text.tokenizer is empty"):
        train(c, str(tmp_path / "a"))
    c = _config(lgm_dir, 1)
    c.rl.prompts_per_batch = 1  # 4 samples cannot split over 8 devices
    with pytest.raises(ValueError, match="4 samples .* do not split over the 8 batch shards"):
        train(c, str(tmp_path / "mesh"))
    c = _config(lgm_dir, 1)
    c.prompts.path = str(tmp_path / "none.txt")
    with pytest.raises(FileNotFoundError, match="none.txt"):
        train(c, str(tmp_path / "b"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# only a comment\n")
    c.prompts.path = str(empty)
    with pytest.raises(ValueError, match="empty.txt"):
        train(c, str(tmp_path / "c"))


def test_readme_command_runs_rollout_rewards_update_eval_checkpoint(tmp_path):
    """`python -m vggrpo_jax.train --config=configs/toy_random.py` with a smaller LGM build and fewer iterations."""
    workdir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "vggrpo_jax.train", "--config=configs/toy_random.py", f"--workdir={workdir}",
        f"--config.lgm.build_config={HELPERS}/lgm_smoke.py", "--config.train.num_iterations=2",
        "--config.train.checkpoint_every=1", "--config.eval.every=2", "--config.rl.num_steps=3",
        "--config.eval.num_steps=3", "--config.prompts.toyworld_count=8",
    ]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a user's single CPU device
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward/motion_mean", "reward/geo_mean", "train/loss", "advantage_mean"} <= set(rows[0])
    assert {"eval/latent_motion", "eval/rgb_geo", "eval/frame_smoothness", "eval/epi_failed",
            "eval/motion_smoothness"} <= set(rows[1])
    assert ("eval/epi_sampson" in rows[1]) == (rows[1]["eval/epi_failed"] < 1)  # no NaN rows when every clip failed
    assert os.path.isfile(workdir / "lgm" / "lgm" / "lgm.json")
    samples = workdir / "samples" / "step_000002"
    assert (samples / "0.mp4").stat().st_size > 0 and (samples / "0_camera.png").stat().st_size > 0
    assert sorted(os.listdir(workdir / "checkpoints"))[-1] == "2"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tb"))
    # the run report: base against trained on the eval prompts, with its pictures and manifold checks
    report = json.load(open(workdir / "report.json"))
    assert set(report["summary"]) == {"base", "GRPO step 2"} and report["baseline"] == "base"
    assert set(report["manifold"]) == {"vae_roundtrip_psnr", "colour_mean", "colour_std", "saturation",
                                        "frame_difference"}
    text = open(workdir / "report.md").read()
    for png in ("reward_curves.png", "cameras.png", "frames.png"):
        assert f"]({png})" in text and (workdir / png).stat().st_size > 0
