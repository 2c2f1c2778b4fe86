"""Damaged checkpoints (issue 16, item 2): every kind of file orbax writes in a step directory is truncated, deleted
or overwritten with garbage; the restore must then either read the step exactly (a file it does not need) or report
it in one line naming it, move it to <checkpoints>/damaged/<step> (not delete it) and resume from the older intact
step. A corruption that yields other values than the ones saved would be a silent failure and fails the test."""

import logging
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from vggrpo_jax import training
from vggrpo_jax.errors import UserError
from vggrpo_jax.training.checkpoint import DAMAGED_DIR, CheckpointDamagedError

MODES = ("truncate", "delete", "garbage")
# Files the restore reads: damaging them must set the step aside (so this test fails if detection breaks).
MUST_DETECT = ("layout/metadata", "meta/metadata", "state/manifest.ocdbt", "state/d/")


def _values(step: int) -> dict:
    return {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3) * step, "b": np.full(3, step, np.float32)}


def _like() -> dict:
    return {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A checkpoint directory with intact steps 1 and 2 (written synchronously, as after a finished save)."""
    d = str(tmp_path_factory.mktemp("pristine") / "ckpt")
    with training.Checkpointer(d, keep=3, async_save=False) as ckpt:
        for s in (1, 2):
            ckpt.save(s, {k: jnp.asarray(v) for k, v in _values(s).items()}, meta={"step": s})
    return d


def _files(step_dir: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), step_dir) for r, _, fs in os.walk(step_dir) for f in fs)


def _damage(path: str, mode: str) -> None:
    size = os.path.getsize(path)
    if mode == "delete":
        os.remove(path)
    elif mode == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    else:
        with open(path, "wb") as fh:
            fh.write(np.random.default_rng(size).bytes(max(size, 16)))


def test_orbax_writes_the_file_kinds_this_test_damages(pristine):
    files = _files(os.path.join(pristine, "2"))
    for kind in MUST_DETECT + ("_CHECKPOINT_METADATA", "state/_METADATA"):
        assert any(f.startswith(kind) for f in files), (kind, files)


def test_every_damaged_file_is_set_aside_or_read_exactly(pristine, tmp_path, caplog):
    files = _files(os.path.join(pristine, "2"))
    outcomes = {}
    for rel in files:
        for mode in MODES:
            d = str(tmp_path / f"{rel.replace('/', '_')}_{mode}")
            shutil.copytree(pristine, d)
            _damage(os.path.join(d, "2", rel), mode)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                with training.Checkpointer(d) as ckpt:
                    step, got, meta = ckpt.restore(_like())
                    steps_after = ckpt.all_steps()
            want = _values(step)
            for k in want:  # whichever step was restored, its values are exactly the saved ones
                np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=f"{rel} {mode}")
            assert meta == {"step": step}
            reports = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
            if step == 2:
                assert not reports and not os.path.exists(os.path.join(d, DAMAGED_DIR)), (rel, mode)
            else:
                assert step == 1 and steps_after == [1], (rel, mode, step, steps_after)
                assert len(reports) == 1 and "\n" not in reports[0], (rel, mode, reports)
                assert os.path.join(d, "2") in reports[0] and os.path.join(d, DAMAGED_DIR, "2") in reports[0]
                # set aside with the damage as it was (kept for inspection), not deleted
                kept = os.path.join(d, DAMAGED_DIR, "2", rel)
                assert os.path.exists(kept) == (mode != "delete"), (rel, mode)
                assert not os.path.exists(os.path.join(d, "2"))
            outcomes[(rel, mode)] = step
            shutil.rmtree(d)
    for (rel, mode), step in outcomes.items():
        if any(rel.startswith(k) for k in MUST_DETECT):
            assert step == 1, f"damage to {rel} ({mode}) was not detected"


def test_the_run_resaves_the_step_it_set_aside(pristine, tmp_path):
    d = str(tmp_path / "ckpt")
    shutil.copytree(pristine, d)
    _damage(os.path.join(d, "2", "meta", "metadata"), "truncate")
    with training.Checkpointer(d, async_save=False) as ckpt:
        assert ckpt.read_meta() == {"step": 1}  # the metadata-only read falls back (and sets aside) the same way
        assert ckpt.all_steps() == [1]
        step, _, _ = ckpt.restore(_like())
        assert step == 1
        # The resumed run reaches step 2 again: the save must happen (the damaged 2 is out of the way).
        assert ckpt.save(2, {k: jnp.asarray(v) + 1 for k, v in _values(2).items()}, meta={"step": 2})
    with training.Checkpointer(d) as ckpt:
        step, got, _ = ckpt.restore(_like())
    assert step == 2
    np.testing.assert_array_equal(np.asarray(got["b"]), _values(2)["b"] + 1)
    # A second damage of the same step number does not overwrite the first one set aside.
    _damage(os.path.join(d, "2", "layout", "metadata"), "garbage")
    with training.Checkpointer(d) as ckpt:
        assert ckpt.restore(_like())[0] == 1
    assert sorted(os.listdir(os.path.join(d, DAMAGED_DIR))) == ["2", "2.1"]


def test_no_intact_step_is_one_clear_error(pristine, tmp_path):
    d = str(tmp_path / "ckpt")
    shutil.copytree(pristine, d)
    for s in ("1", "2"):
        _damage(os.path.join(d, s, "layout", "metadata"), "delete")
    with training.Checkpointer(d) as ckpt:
        with pytest.raises(CheckpointDamagedError, match=r"no intact checkpoint in .*set aside.*\[2, 1\]") as info:
            ckpt.restore(_like())
        assert ckpt.latest_step() is None  # a rerun starts from scratch instead of failing again
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert sorted(os.listdir(os.path.join(d, DAMAGED_DIR))) == ["1", "2"]


def test_an_explicit_damaged_step_raises_naming_the_file_and_stays(pristine, tmp_path):
    d = str(tmp_path / "ckpt")
    shutil.copytree(pristine, d)
    data = [f for f in _files(os.path.join(d, "2")) if f.startswith("state/d/")]
    _damage(os.path.join(d, "2", data[0]), "garbage")
    with training.Checkpointer(d) as ckpt:
        with pytest.raises(CheckpointDamagedError, match=rf"checkpoint {d}/2 is damaged .*file {d}/2/state") as info:
            ckpt.restore(_like(), step=2)
    assert "\n" not in str(info.value)
    assert os.path.isdir(os.path.join(d, "2")) and not os.path.exists(os.path.join(d, DAMAGED_DIR))


def test_another_model_is_not_mistaken_for_damage(pristine, tmp_path):
    d = str(tmp_path / "ckpt")
    shutil.copytree(pristine, d)
    with training.Checkpointer(d) as ckpt:
        with pytest.raises(training.LayoutMismatchError, match="'w'"):
            ckpt.restore({"w": jnp.zeros((3, 3)), "b": jnp.zeros(3)})
    assert not os.path.exists(os.path.join(d, DAMAGED_DIR))
