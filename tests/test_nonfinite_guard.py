"""The non-finite update guard of every training job (issue 16, item 3), through the shared training layer:
training.guarded_update skips an update whose loss, gradient, new parameters or new optimizer state is not finite,
and TrainLoop(max_consecutive_skips=N) stops the run with TrainingDiverged on the N-th skip in a row, after the
step's checkpoint, which holds only finite values."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vggrpo_jax import training
from vggrpo_jax.training import TrainingDiverged, guarded_update

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}


def _adam(lr):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))  # by hand: the factory rejects a NaN lr


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_a_finite_update_is_the_unguarded_one_bit_for_bit():
    tx = _adam(0.1)
    opt = tx.init(PARAMS)
    grads = {"w": jnp.array([0.3, -0.1, 0.2]), "b": jnp.array(-0.7)}
    updates, want_opt = tx.update(grads, opt, PARAMS)
    want = optax.apply_updates(PARAMS, updates)
    got, got_opt, skipped = jax.jit(lambda g, o, p: guarded_update(tx, g, o, p, jnp.float32(1.0)))(grads, opt, PARAMS)
    assert float(skipped) == 0.0
    for a, b in zip(jax.tree.leaves((want, want_opt)), jax.tree.leaves((got, got_opt))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", ["nan_loss", "inf_grad", "nan_lr"])
def test_a_non_finite_update_leaves_params_and_optimizer_state_unchanged(case):
    tx = _adam(float("nan") if case == "nan_lr" else 0.1)
    opt = tx.init(PARAMS)
    opt = tx.update({"w": jnp.ones(3), "b": jnp.array(1.0)}, opt, PARAMS)[1] if case != "nan_lr" else opt
    grads = {"w": jnp.array([0.3, jnp.inf if case == "inf_grad" else -0.1, 0.2]), "b": jnp.array(-0.7)}
    loss = jnp.float32(jnp.nan if case == "nan_loss" else 1.0)
    got, got_opt, skipped = jax.jit(lambda g, o, p: guarded_update(tx, g, o, p, loss))(grads, opt, PARAMS)
    assert float(skipped) == 1.0
    for a, b in zip(jax.tree.leaves((PARAMS, opt)), jax.tree.leaves((got, got_opt))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_loop_stops_on_the_nth_consecutive_skip_after_its_checkpoint():
    saved = []
    loop = training.TrainLoop(20, checkpoint=saved.append, checkpoint_every=4, progress=False, handle_signals=False,
                              max_consecutive_skips=3)
    pattern = {2: 1.0, 3: 1.0, 5: 1.0, 6: 1.0, 7: 1.0}  # 2 in a row (reset by step 4), then 3 in a row
    with pytest.raises(TrainingDiverged, match=r"3 consecutive updates were skipped .*steps 5\.\.7; "
                                               r"train\.max_consecutive_skips=3"):
        with loop:
            for step in loop:
                loop.step_done(step, {"skipped": pattern.get(step, 0.0)})
    assert saved == [4]
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        training.TrainLoop(5, max_consecutive_skips=-1)


def test_lgm_fit_stops_and_its_checkpoint_is_finite(tmp_path):
    from vggrpo_jax.lgm.loop import fit

    @jax.tree_util.register_static
    class NanLoss:  # hashable, as fit's compiled step requires
        def __call__(self, params, frozen, batch, key):
            loss = jnp.sum((params["w"] - batch) ** 2) * jnp.where(batch[0] > 1.0, jnp.nan, 1.0)
            return loss, {}

        def __hash__(self):
            return 7

        def __eq__(self, other):
            return isinstance(other, NanLoss)

    # steps 1-2 learn on finite batches; from step 3 on the batch makes the loss NaN: steps 3, 4 skip, then stop
    def batch_fn(i):
        return jnp.full((3,), 2.0 if i >= 2 else 0.5)

    with pytest.raises(TrainingDiverged, match=r"steps 3\.\.4"):
        fit(name="toy", params={"w": jnp.zeros(3)}, frozen=None, loss_fn=NanLoss(), batch_fn=batch_fn,
            optim=training.OptimConfig(lr=0.1), total_steps=10, rng=jax.random.key(0),
            ckpt_dir=str(tmp_path / "ckpt"), save_every=1, progress=False, log_every=1, max_consecutive_skips=2)
    with training.Checkpointer(str(tmp_path / "ckpt")) as ckpt:
        assert ckpt.all_steps()[-1] == 4
        state3 = ckpt.restore(_lgm_like(), step=3)[1]  # after the first skipped step: the state of step 2
        state4 = ckpt.restore(_lgm_like(), step=4)[1]
    assert _finite(state4)
    assert float(np.abs(np.asarray(state3["params"]["w"])).sum()) > 0  # it learned before the NaN batches
    for a, b in zip(jax.tree.leaves(state3), jax.tree.leaves(state4)):  # a skipped step changed nothing
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _lgm_like():
    from vggrpo_jax.lgm.loop import make_optimizer

    params = {"w": jnp.zeros(3)}
    tx = make_optimizer(training.OptimConfig(lr=0.1), 10)
    return {"params": params, "opt": tx.init(params), "rng": jax.random.key_data(jax.random.key(0))}


@pytest.mark.slow
def test_toy_vae_job_stops_on_nan_data(tmp_path, monkeypatch):
    from test_toy_vae import _tiny_config
    from vggrpo_jax.data import toyworld_tfds
    from vggrpo_jax.toy_vae import job

    data_dir = str(tmp_path / "tfds")
    toyworld_tfds.build(data_dir, "tiny")
    c = _tiny_config(data_dir)
    c.train.max_consecutive_skips = 2
    real = job.CropSampler.__call__
    monkeypatch.setattr(job.CropSampler, "__call__", lambda self, step: real(self, step) * np.float32(np.nan))
    with pytest.raises(TrainingDiverged, match=r"steps 1\.\.2"):
        job.run(c, str(tmp_path / "w"))
    _assert_params_unchanged(str(tmp_path / "w"))


@pytest.mark.slow
def test_finetune_job_stops_on_nan_latents(tmp_path):
    from test_finetune import _config, _write_latents
    from vggrpo_jax.sft.job import run

    c = _config(6)
    c.train.max_consecutive_skips = 2
    c.train.checkpoint_every = 1
    _write_latents(c, str(tmp_path))
    path = os.path.join(str(tmp_path), "latents", "train.npy")
    np.save(path, np.load(path) * np.float32(np.nan))
    with pytest.raises(TrainingDiverged, match=r"steps 1\.\.2"):
        run(c, str(tmp_path))
    _assert_params_unchanged(str(tmp_path))


@pytest.mark.slow
def test_geometry_job_stops_on_nan_images(tmp_path, monkeypatch):
    import configs.geometry_toy as geometry_toy
    from vggrpo_jax.geometry_model import job

    c = geometry_toy.get_config()
    c.data.update(source="render", num_train=4, num_heldout=2)
    c.train.update(num_steps=6, batch_size=2, log_every=1, checkpoint_every=1, eval_every=0, max_consecutive_skips=2)
    c.eval.update(num_clips=2, batch_size=2)
    real = job.augment
    monkeypatch.setattr(job, "augment", lambda images, *a: real(images, *a) * jnp.nan)
    with pytest.raises(TrainingDiverged, match=r"steps 1\.\.2"):
        job.run(c, str(tmp_path))
    _assert_params_unchanged(str(tmp_path))


def _assert_params_unchanged(workdir: str) -> None:
    """Both steps were skipped: the checkpoint of step 2 is finite (the initial parameters, unchanged)."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        assert mgr.latest_step() == 2
        state = mgr.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert _finite(state)
