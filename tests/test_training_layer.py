"""The training layer (vggrpo_jax/training): exact resume with the iterator position, the layout check, the
optimizer factory's schedules, metrics.jsonl, the loop's periodic actions, stop on SIGTERM and profiler window."""

import json
import os
import signal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vggrpo_jax import training


def _data():
    """A shuffled grain iterator over 40 rows of 3 numbers: its position is part of the run's state."""
    rows = np.arange(120, dtype=np.float32).reshape(40, 3) / 120.0
    return iter(grain.MapDataset.source(rows).shuffle(seed=3).repeat().batch(4).to_iter_dataset())


def _run(workdir, total, stop_after=None):
    """A tiny linear regression trained for `total` steps, resumable; stops (as if preempted) after `stop_after`."""
    cfg = training.OptimConfig(lr=0.05, schedule="cosine", warmup_steps=2, grad_clip=1.0, weight_decay=1e-3)
    tx = training.make_optimizer(cfg, total_steps=total)
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    state = {"params": params, "opt": tx.init(params), "rng": jax.random.key(0)}
    it = _data()
    ckpt = training.Checkpointer(os.path.join(workdir, "ckpt"), keep=2)
    start = 0
    if ckpt.latest_step() is not None:
        start, state, meta = ckpt.restore(state, data=it)
        assert meta["note"] == "hello"

    @jax.jit
    def step_fn(state, x, step):
        key = jax.random.fold_in(state["rng"], step)
        target = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(key, (x.shape[0],))

        def loss(p):
            return jnp.mean((x @ p["w"] + p["b"] - target) ** 2)

        value, grads = jax.value_and_grad(loss)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return dict(state, params=optax.apply_updates(state["params"], updates), opt=opt), {"loss": value}

    writer = training.MetricWriter(workdir)
    seen = []
    loop = training.TrainLoop(total, start, writer=writer, samples_per_step=4, log_every=1,
                              checkpoint=lambda s: ckpt.save(s, state, meta={"note": "hello"}, data=it),
                              checkpoint_every=3, checkpoint_wait=ckpt.wait, progress=False, handle_signals=False)
    with loop:
        for step in loop:
            x = next(it)
            seen.append(x)
            state, metrics = step_fn(state, x, step)
            loop.step_done(step, metrics)
            if step == stop_after:
                break
    ckpt.close()
    writer.close()
    return state, seen


def test_exact_resume_including_iterator_position(tmp_path):
    full, full_batches = _run(str(tmp_path / "full"), 10)
    _, first = _run(str(tmp_path / "res"), 10, stop_after=7)  # checkpoints at 3 and 6; step 7 is lost
    resumed, rest = _run(str(tmp_path / "res"), 10)
    np.testing.assert_array_equal(np.stack(rest), np.stack(full_batches[6:]))  # continues at batch 7
    for a, b in zip(jax.tree.leaves(jax.random.key_data(full["rng"])), jax.tree.leaves(jax.random.key_data(resumed["rng"]))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(full["params"]) + jax.tree.leaves(full["opt"]),
                    jax.tree.leaves(resumed["params"]) + jax.tree.leaves(resumed["opt"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert training.Checkpointer(str(tmp_path / "res" / "ckpt")).all_steps() == [9, 10]  # keep=2
    rows = training.read_metrics(str(tmp_path / "res"))
    assert [r["step"] for r in rows] == list(range(1, 11))
    full_rows = training.read_metrics(str(tmp_path / "full"))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows]


def test_restore_at_given_shardings(tmp_path):
    mesh = jax.make_mesh((8,), ("d",))
    state = {"a": jnp.arange(16.0).reshape(8, 2), "s": jnp.ones(())}
    with training.Checkpointer(str(tmp_path / "c"), async_save=False) as ckpt:
        ckpt.save(1, state)
        sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        step, got, meta = ckpt.restore(abstract, shardings={"a": sharded, "s": rep})
    assert step == 1 and meta == {}
    assert got["a"].sharding == sharded and got["s"].sharding == rep
    np.testing.assert_array_equal(got["a"], state["a"])


def test_layout_mismatch_names_the_leaf(tmp_path):
    with training.Checkpointer(str(tmp_path / "c"), async_save=False) as ckpt:
        ckpt.save(1, {"params": {"dense": jnp.zeros((3, 4)), "bias": jnp.zeros(4)}})
        with pytest.raises(training.LayoutMismatchError, match=r"\['params'\]\['dense'\].*\(3, 4\) float32.*\(3, 5\)"):
            ckpt.restore({"params": {"dense": jnp.zeros((3, 5)), "bias": jnp.zeros(4)}})
        with pytest.raises(training.LayoutMismatchError, match=r"\['params'\]\['bias'\].*float32.*bfloat16"):
            ckpt.restore({"params": {"dense": jnp.zeros((3, 4)), "bias": jnp.zeros(4, jnp.bfloat16)}})
        with pytest.raises(training.LayoutMismatchError, match=r"lacks, first \"\['params'\]\['extra'\]\""):
            ckpt.restore({"params": {"dense": jnp.zeros((3, 4)), "bias": jnp.zeros(4), "extra": jnp.zeros(1)}})
        with pytest.raises(FileNotFoundError, match="no checkpoint step 5"):
            ckpt.restore({"x": jnp.zeros(1)}, step=5)
        assert ckpt.save(1, {"anything": jnp.zeros(1)}) is False  # save on demand after a periodic save: no-op


def test_fallback_to_last_intact_step(tmp_path):
    with training.Checkpointer(str(tmp_path / "c"), async_save=False) as ckpt:
        ckpt.save(1, {"x": jnp.ones(3)})
        ckpt.save(2, {"x": 2 * jnp.ones(3)})
    # Damage step 2's arrays (not its layout): the restore reports it and takes step 1.
    state_dir = tmp_path / "c" / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for f in files:
            if not f.endswith(".json") and "manifest" not in f and "METADATA" not in f:
                os.remove(os.path.join(root, f))
    with training.Checkpointer(str(tmp_path / "c")) as ckpt:
        step, got, _ = ckpt.restore({"x": jnp.zeros(3)})
    assert step == 1
    np.testing.assert_array_equal(got["x"], np.ones(3))


def _schedule_values(cfg, total):
    lr = training.make_schedule(cfg, total)
    return [float(lr(i)) if callable(lr) else lr for i in range(total + 1)]


def test_optimizer_schedule_values():
    # Constant with no warm-up: the float itself (no schedule state in the optimizer).
    assert training.make_schedule(training.OptimConfig(lr=0.1), None) == 0.1
    v = _schedule_values(training.OptimConfig(lr=1.0, warmup_steps=4), 10)
    np.testing.assert_allclose(v, [0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1], atol=1e-7)
    # Cosine: warm-up to lr at step 4, then lr·(f + (1−f)·(1 + cos(π·t))/2) down to lr·f at step 10.
    f = 0.1
    v = _schedule_values(training.OptimConfig(lr=2.0, schedule="cosine", warmup_steps=4, end_lr_fraction=f), 10)
    t = (np.arange(4, 11) - 4) / 6
    expect = [0, 0.5, 1.0, 1.5] + list(2.0 * (f + (1 - f) * 0.5 * (1 + np.cos(np.pi * t))))
    np.testing.assert_allclose(v, expect, rtol=1e-6, atol=1e-7)
    v = _schedule_values(training.OptimConfig(lr=1.0, schedule="linear", warmup_steps=2), 6)
    np.testing.assert_allclose(v, [0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    # A warm-up longer than the run is shortened so the run reaches lr.
    v = _schedule_values(training.OptimConfig(lr=1.0, warmup_steps=100), 3)
    np.testing.assert_allclose(v, [0, 0.5, 1.0, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="pass total_steps"):
        training.make_schedule(training.OptimConfig(schedule="cosine"), None)


def test_optimizer_factory_updates_clip_and_mask():
    params = {"a": jnp.array([1.0, 2.0]), "frozen": jnp.array([3.0])}
    grads = {"a": jnp.array([30.0, 40.0]), "frozen": jnp.array([1.0])}
    cfg = training.OptimConfig(name="sgd", lr=0.1, grad_clip=5.0)
    tx = training.make_optimizer(cfg, mask={"a": True, "frozen": False})
    updates, _ = tx.update(grads, tx.init(params), params)
    # Clipped to global norm 5 first (the norm of the trained leaves only: 50), then −lr·g; the frozen leaf does
    # not move.
    norm = 50.0
    np.testing.assert_allclose(updates["a"], -0.1 * np.array([30.0, 40.0]) * 5 / norm, rtol=1e-6)
    np.testing.assert_array_equal(updates["frozen"], [0.0])
    # AdamW's first step is −lr·(sign(g) + wd·p) (bias-corrected moments, eps ≪ |g|).
    tx = training.make_optimizer(training.OptimConfig(lr=0.01, weight_decay=0.1))
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], -0.01 * (np.ones(2) + 0.1 * np.array([1.0, 2.0])), rtol=1e-5)


def test_optim_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown optim keys \['learning_rate'\]"):
        training.OptimConfig.from_config({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="optim.schedule 'step'"):
        training.OptimConfig.from_config({"schedule": "step"})
    with pytest.raises(ValueError, match="optim.weight_decay .* needs optim.name adamw"):
        training.OptimConfig(name="adam", weight_decay=0.1)
    assert training.OptimConfig.from_config({"lr": "0.5", "warmup_steps": 2.0}).lr == 0.5


def test_metrics_jsonl_and_loop_actions(tmp_path):
    writer = training.MetricWriter(str(tmp_path))
    calls = []

    def evaluate(step):
        calls.append(step)
        return {"eval/score": step * 10}

    loop = training.TrainLoop(5, writer=writer, samples_per_step=8, log_every=2, checkpoint=calls.append,
                              checkpoint_every=4, progress=False, handle_signals=False)
    loop.every(3, evaluate)
    with loop:
        for step in loop:
            loop.step_done(step, {"loss": jnp.float32(step / 2)})
    writer.close()
    with open(tmp_path / "metrics.jsonl") as fh:
        lines = [json.loads(line) for line in fh]
    # Logged at the log steps (2, 4), at the last step (5), and when an action returned metrics (3, 5).
    assert [r["step"] for r in lines] == [2, 3, 4, 5]
    assert [r["loss"] for r in lines] == [1.0, 1.5, 2.0, 2.5]
    assert lines[1]["eval/score"] == 30.0 and lines[3]["eval/score"] == 50.0 and "eval/score" not in lines[0]
    for r in lines:
        assert r["perf/step_seconds"] > 0
        assert r["perf/samples_per_second"] == pytest.approx(8 / r["perf/step_seconds"])
    assert calls == [3, 4, 5, 5]  # eval at 3, checkpoint at 4, then the last step's eval and checkpoint
    assert os.listdir(tmp_path / "tb")  # tensorboard event file


def test_sigterm_saves_and_stops(tmp_path):
    saved, waited = [], []
    loop = training.TrainLoop(10, 2, checkpoint=saved.append, checkpoint_every=5, checkpoint_wait=lambda: waited.append(1),
                              progress=False)
    with pytest.raises(training.StopRequested, match="stopped by SIGTERM after step 4 of 10.*rerun") as info:
        with loop:
            for step in loop:
                if step == 4:
                    os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the step finishes first
                loop.step_done(step, {})
    assert saved == [4] and waited == [1]
    assert info.value.code != 0
    assert signal.getsignal(signal.SIGTERM) is not loop._on_signal  # the previous handler is back


def test_profile_window_writes_a_trace(tmp_path):
    f = jax.jit(lambda x: jnp.sin(x) @ x.T)
    loop = training.TrainLoop(4, profile_steps=2, workdir=str(tmp_path), progress=False, handle_signals=False)
    with loop:
        for step in loop:
            loop.step_done(step, {"y": f(jnp.ones((8, 8)))[0, 0]})
    traces = [os.path.join(r, n) for r, _, names in os.walk(tmp_path / "profile") for n in names]
    assert any(n.endswith(".xplane.pb") for n in traces), traces
