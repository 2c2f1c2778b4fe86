"""The toyworld tfds dataset: seed-disjoint splits, per-clip kinds (dynamic/static, jitter recorded but never
captioned), and builder → ArrayRecord → reader equal to direct rendering."""
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vggrpo_jax.data import toyworld_tfds as T
from vggrpo_jax.data.toyworld import render_clip

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = T.build(data_dir, "tiny")
    return data_dir, builder.builder_config


def _records(data_dir, split):
    ds = T.load(split, data_dir, "tiny", build_if_missing=False)
    return [ds[i] for i in range(len(ds))]


def test_splits_are_disjoint_seed_ranges(tiny):
    data_dir, cfg = tiny
    train = {r["seed"] for r in _records(data_dir, "train")}
    held = {r["seed"] for r in _records(data_dir, "heldout")}
    assert train == set(range(cfg.num_train)) and len(held) == cfg.num_heldout
    assert held == set(T.split_seeds("heldout", cfg.num_train, cfg.num_heldout)) and not train & held
    assert not set(T.split_seeds("train", 2048, 256)) & set(T.split_seeds("heldout", 2048, 256))
    with pytest.raises(ValueError, match="num_train"):
        T.split_seeds("train", T.HELDOUT_SEED_BASE + 1, 1)
    with pytest.raises(ValueError, match="split"):
        T.split_seeds("test", 4, 4)


def test_clip_kinds_mixed_and_recorded():
    specs = [T.clip_spec(s) for s in range(800)]
    dyn = np.mean([s.dynamic for s in specs])
    jit = np.array([s.jitter for s in specs])
    assert 0.44 < dyn < 0.56 and 0.44 < np.mean(jit > 0) < 0.56
    amps = jit[jit > 0]
    assert amps.min() >= T.JITTER_RANGE[0] and amps.max() <= T.JITTER_RANGE[1] and amps.std() > 0.005
    # Independent kinds: all four combinations occur about equally often.
    both = np.mean([s.dynamic and s.jitter > 0 for s in specs])
    assert 0.19 < both < 0.31
    assert T.clip_spec(7) == T.clip_spec(7)


def test_jitter_recorded_never_captioned(tiny):
    data_dir, cfg = tiny
    recs = _records(data_dir, "train") + _records(data_dir, "heldout")
    kinds = {(r["jittered"], r["is_dynamic"]) for r in recs}
    assert len(kinds) >= 3, kinds  # the tiny split still mixes the kinds
    base = cfg.toyworld_config()
    for r in recs:
        spec = T.clip_spec(r["seed"])
        assert r["jitter"] == pytest.approx(spec.jitter, abs=0) and r["jittered"] == (spec.jitter > 0)
        assert r["is_dynamic"] == spec.dynamic == bool(r["object_moving"].any())
        assert not re.search(r"jitter|shak|handheld|unstead|wobbl|trembl", r["caption"], re.I), r["caption"]
        # The same seed rendered without jitter: the same caption, a smoother camera.
        smooth = render_clip(r["seed"], config=T.ClipSpec(r["seed"], spec.dynamic, 0.0).config(base))
        assert smooth["caption"] == r["caption"]
        if r["jittered"]:
            acc = lambda c2w: np.abs(np.diff(c2w[:, :3, 3], 2, axis=0)).mean()
            assert acc(r["c2w"]) > 3 * acc(smooth["c2w"]) + 1e-3


def test_builder_reader_round_trip_equals_rendering(tiny):
    data_dir, cfg = tiny
    base = cfg.toyworld_config()
    for r in _records(data_dir, "heldout")[:2] + _records(data_dir, "train")[:2]:
        clip = render_clip(r["seed"], config=T.clip_spec(r["seed"]).config(base))
        assert set(clip) | {"seed", "jitter", "jittered"} == set(r)
        np.testing.assert_array_equal(r["video"], T.quantize_video(clip["video"]))
        for k, v in clip.items():
            if k == "video":
                continue
            if isinstance(v, np.ndarray):
                assert r[k].shape == v.shape and r[k].dtype == v.dtype, k
                np.testing.assert_array_equal(r[k], v, err_msg=k)
            else:
                assert r[k] == v, k
    x = T.video_to_model(r["video"])
    assert x.shape == (3, cfg.num_frames, cfg.height, cfg.width) and x.min() >= -1 and x.max() <= 1


def test_missing_dataset_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="toyworld_tfds --data_dir"):
        T.data_source("train", str(tmp_path), "tiny", build_if_missing=False)


def test_captions_without_rendering_equal_the_stored_ones():
    """T.captions (the GRPO prompts "toyworld:tiny") are the builder's captions, static and dynamic clips alike."""
    from vggrpo_jax import backbones
    from vggrpo_jax.config import base_config

    base = T.builder_config("tiny").toyworld_config()
    for split, seeds in (("train", T.split_seeds("train", 6, 0)), ("heldout", T.split_seeds("heldout", 0, 6))):
        rendered = [T.render_record(s, base)["caption"] for s in seeds]
        assert {T.clip_spec(s).dynamic for s in seeds} == {False, True}
        assert T.captions(split, 6, "tiny") == rendered
    c = base_config()
    c.prompts.path = c.prompts.eval_path = "toyworld:tiny"
    c.prompts.toyworld_count = 6
    assert backbones.load_prompts(c, eval_split=True) == T.captions("heldout", 6, "tiny")
    assert [s for _, s in backbones.load_prompts_with_splits(c)] == [
        "dynamic" if "moves" not in p.split(";")[1] else "static" for p in T.captions("train", 6, "tiny")]
