"""`python -m vggrpo_jax.sample` end to end at the toy config (tiny random models, a saved unfitted LGM).

A GRPO checkpoint with non-zero EMA adapters is written through the trainer's own state layout; the CLI samples it
with LGM guidance on, and the in-process job samples the base model from the same noise: the files and jsonl fields
are checked, and the two checkpoints must give different videos.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red cube on a checkered floor, the camera moves forward", "two spheres, the camera pans left",
           "a blue cylinder, the camera orbits"]


@pytest.fixture(scope="module")
def lgm_dir(tmp_path_factory):
    from vggrpo_jax import build
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
    from vggrpo_jax import build

    c = build.load_config_file(os.path.join(ROOT, "configs", "toy.py"))
    c.lgm.checkpoint = lgm_dir
    for key, value in OVERRIDES.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def _write_checkpoint(config, workdir, step):
    """A GRPO checkpoint at `step` whose EMA adapters are non-zero (the trainer's own state layout)."""
    from vggrpo_jax.checkpoint import TrainCheckpointer
    from vggrpo_jax.sampling import SamplingJob
    from vggrpo_jax.train import _flatten

    job = SamplingJob(config, workdir, 3, PROMPTS)
    state = job.trainer.init_state()
    leaves, treedef = jax.tree.flatten(state.ema_params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    ema = jax.tree.unflatten(treedef, [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    state = state.replace(ema_params=ema)
    ckpt = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=3)
    ckpt.save(step, _flatten(state), {"data": {}, "iteration": step})
    ckpt.close()


def test_sample_cli_writes_videos_and_jsonl_and_checkpoints_differ(lgm_dir, tmp_path):
    from vggrpo_jax.data.video import read_video
    from vggrpo_jax.sampling import sample

    workdir = tmp_path / "run"
    config = _config(lgm_dir)
    _write_checkpoint(config, str(workdir), step=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["# toy prompts"] + PROMPTS) + "\n")

    out = tmp_path / "trained"
    cmd = [sys.executable, "-m", "vggrpo_jax.sample", "--config=configs/toy.py", f"--workdir={workdir}",
           "--checkpoint=latest", f"--prompts={prompts}", f"--out={out}", "--seed=11", "--num_steps=3",
           "--batch_size=2", f"--config.lgm.checkpoint={lgm_dir}", "--config.lgm.build_config=",
           "--config.guidance.scale=0.5", "--config.guidance.steps=1,2", "--config.guidance.weights.geo=0.5"]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a user's single CPU device
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["prompt"] for r in rows] == PROMPTS
    for i, r in enumerate(rows):
        assert r["seed"] == 11 and r["checkpoint"] == "latest" and r["step"] == 3 and r["num_steps"] == 3
        assert r["video"] == f"{i:06d}.mp4"
        assert r["guidance"]["scale"] == 0.5 and r["guidance"]["steps"] == [1, 2]
        assert r["guidance"]["weights"] == {"motion": 1.0, "geo": 0.5}
        assert set(r["lgm"]) == {"motion", "geo", "e_trans", "e_rot"}
        assert 0.0 <= r["lgm"]["motion"] <= 1.0
        video = read_video(str(out / r["video"]))
        assert video.shape == (3, 9, 64, 64)

    # The base model from the same noise (in process, 8 devices: one video per batch shard).
    base = sample(config, str(workdir), "base", str(prompts), str(tmp_path / "base"), seed=11, num_steps=3)
    assert [r["checkpoint"] for r in base] == ["base"] * 3 and base[0]["step"] is None
    for i in range(3):
        a = read_video(str(out / f"{i:06d}.mp4"))
        b = read_video(str(tmp_path / "base" / f"{i:06d}.mp4"))
        assert np.abs(a - b).mean() > 1e-2, i


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
