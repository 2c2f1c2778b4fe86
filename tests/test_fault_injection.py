"""Fault injection (issue 16, item 6): SIGKILLs at random moments — during start-up, mid-step, mid-save — across
two jobs, then the check that no checkpoint is corrupt (every step left on disk restores, or a damaged one is set
aside by the Checkpointer) and that the run, resumed to the end, has exactly the metrics and parameters of an
uninterrupted run. Slow: each kill costs a process start (the fast real-signal test is tests/test_preemption.py)."""

import json
import os
import random
import signal
import time

import pytest

from tests.helpers import preempt
from tests.helpers.preempt import PYTHON, ROOT

pytestmark = pytest.mark.slow


def _kill_at_random(cmd, env, rng, max_delay):
    """Starts cmd, SIGKILLs it after a uniform random delay in [0.5, max_delay] s; returns whether it was killed
    (False: it had finished first)."""
    proc = preempt.start(cmd, env)
    deadline = time.monotonic() + rng.uniform(0.5, max_delay)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    rc, out = preempt.finish(proc)
    assert killed or rc == 0, out[-3000:]
    return killed


def _check_every_checkpoint(ckpt_dir, like):
    """Every step on disk restores; returns (number of steps checked, number set aside as damaged)."""
    from vggrpo_jax import training  # noqa: PLC0415

    if not os.path.isdir(ckpt_dir):
        return 0, 0
    with training.Checkpointer(ckpt_dir) as ckpt:
        steps = ckpt.all_steps()
        for s in steps:
            ckpt.restore(like(), step=s)  # raises CheckpointDamagedError on a corrupt step
    damaged = os.path.join(ckpt_dir, "damaged")
    return len(steps), len(os.listdir(damaged)) if os.path.isdir(damaged) else 0


def _worker_like():
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from vggrpo_jax import training  # noqa: PLC0415

    tx = training.make_optimizer(training.OptimConfig(lr=0.05, schedule="cosine", warmup_steps=2), total_steps=300)
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    return {"params": params, "opt": tx.init(params), "rng": jax.random.key(0)}


def _kill_and_resume(tmp_path, name, cmd_for, like, kills, compare, seed):
    """The uninterrupted run (its wall time T), then runs of the same command SIGKILLed after a uniform random delay
    in [0.5, 0.8 T] s until `kills` kills landed; after each kill every checkpoint on disk must restore. A run that
    finishes before its kill is compared with the uninterrupted one and the faulty workdir starts afresh. The last
    run goes to the end and is compared. Returns (kills, checkpoint restores checked)."""
    import shutil  # noqa: PLC0415

    env = preempt.job_env()
    straight, faulty = str(tmp_path / f"{name}_straight"), str(tmp_path / f"{name}_faulty")
    t0 = time.monotonic()
    rc, out = preempt.run(cmd_for(straight), env)
    assert rc == 0, out[-3000:]
    max_delay = 0.8 * (time.monotonic() - t0)
    rng = random.Random(seed)
    done, checked = 0, 0
    while done < kills:
        if _kill_at_random(cmd_for(faulty), env, rng, max_delay):
            done += 1
        else:  # it finished first: that run must be exact too; start a fresh faulty run
            compare(straight, faulty)
            shutil.rmtree(faulty)
        n, damaged = _check_every_checkpoint(os.path.join(faulty, "checkpoints"), like)
        assert damaged == 0, f"{damaged} checkpoint(s) corrupted by a SIGKILL"
        checked += n
    rc, out = preempt.run(cmd_for(faulty), env)
    assert rc == 0, out[-3000:]
    compare(straight, faulty)
    return done, checked


def _same_metrics(a, b):
    ra, rb = preempt.metric_rows(os.path.join(a, "metrics.jsonl")), preempt.metric_rows(os.path.join(b, "metrics.jsonl"))
    assert sorted(ra) == sorted(rb)
    for step in ra:
        assert ra[step] == rb[step], step


def test_sigkills_across_two_jobs_leave_no_corrupt_checkpoint_and_exact_metrics(tmp_path):
    worker = os.path.join(ROOT, "tests", "helpers", "preempt_worker.py")

    def worker_compare(a, b):
        _same_metrics(a, b)
        with open(os.path.join(a, "final.json")) as x, open(os.path.join(b, "final.json")) as y:
            assert json.load(x) == json.load(y)

    # The training-layer job: seconds of start-up, then 300 steps with a checkpoint every 25.
    kills_a, checked_a = _kill_and_resume(
        tmp_path, "worker", lambda d: [PYTHON, worker, d, "300"], _worker_like, kills=7, compare=worker_compare,
        seed=0)

    # The toy VAE job (a real model, asynchronous saves every 2 steps).
    from vggrpo_jax.data import toyworld_tfds  # noqa: PLC0415

    data_dir = str(tmp_path / "tfds")
    toyworld_tfds.build(data_dir, "tiny")
    overrides = [f"--config.data.data_dir={data_dir}", "--config.data.config=tiny", "--config.data.num_train=6",
                 "--config.data.crop_frames=1", "--config.data.crop_size=16", "--config.model.base_dim=4",
                 "--config.model.z_dim=4", "--config.train.steps=200", "--config.train.batch_size=2",
                 "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.eval.every=0",
                 "--config.eval.num_clips=2", "--config.eval.final_num_clips=2", "--config.eval.batch_size=2",
                 "--config.eval.stats_clips=2"]

    def vae_cmd(d):
        return [PYTHON, "-m", "vggrpo_jax.train_vae", "--config=configs/vae_toy.py", f"--workdir={d}", *overrides]

    def vae_like():
        from flax import nnx  # noqa: PLC0415

        import configs.vae_toy as vae_toy  # noqa: PLC0415
        from vggrpo_jax import training  # noqa: PLC0415
        from vggrpo_jax.models.wan.vae import WanVAE  # noqa: PLC0415
        from vggrpo_jax.toy_vae.job import model_config  # noqa: PLC0415

        c = vae_toy.get_config()
        c.model.update(base_dim=4, z_dim=4)
        c.train.steps = 200
        _, params, _ = nnx.split(WanVAE(model_config(c), rngs=nnx.Rngs(0)), nnx.Param, ...)
        tx = training.make_optimizer(training.OptimConfig.from_config(c.optim, where="optim"), total_steps=200)
        return {"params": params, "opt": tx.init(params)}

    def vae_compare(a, b):
        ra, rb = (preempt.metric_rows(os.path.join(d, "metrics.jsonl")) for d in (a, b))
        assert sorted(ra) == sorted(rb)
        for step in ra:  # see tests/test_preemption.py::test_toy_vae_sigterm for the held-out SSIM's 1e-6
            assert {k: v for k, v in ra[step].items() if k != "final/heldout_ssim"} == \
                   {k: v for k, v in rb[step].items() if k != "final/heldout_ssim"}, step
        with open(os.path.join(a, "summary.json")) as x, open(os.path.join(b, "summary.json")) as y:
            assert json.load(x)["sha256"] == json.load(y)["sha256"]

    kills_b, checked_b = _kill_and_resume(
        tmp_path, "vae", vae_cmd, vae_like, kills=4, compare=vae_compare, seed=1)
    assert kills_a + kills_b >= 10 and checked_a + checked_b > 0
    print(f"{kills_a + kills_b} SIGKILLs, {checked_a + checked_b} checkpoint restores checked, 0 corrupt")
