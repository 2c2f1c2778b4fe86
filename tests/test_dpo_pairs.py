"""The resumable preference-pair job: an interrupted run, restarted, ends exactly where an uninterrupted one does."""

import json
import os

import numpy as np
import pytest

from vggrpo_jax.dpo.pairs import generate_groups, load_groups, sample_seeds, write_pairs
from vggrpo_jax.evaluation.preference import EPIPOLAR_DPO, VIDEOGPA

PROMPTS = [f"prompt {i}" for i in range(5)]
SPLITS = ["static", "dynamic"] * 2 + ["static"]


def _sample(calls):
    def fn(group, prompt, seeds):
        calls.append(group)
        return np.stack([np.random.default_rng(s).normal(size=(2, 1, 2, 2)) for s in seeds])
    return fn


def _score(latents):
    return {"epi_sampson": np.abs(latents).mean(axis=(1, 2, 3, 4)), "motion": latents.std(axis=(1, 2, 3, 4))}


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    straight = str(tmp_path / "straight")
    generate_groups(straight, PROMPTS, SPLITS, 4, _sample([]), _score, seed=7, log=lambda s: None)

    resumed, calls = str(tmp_path / "resumed"), []
    crash = _sample(calls)

    def crashing(group, prompt, seeds):
        if group == 3:
            raise KeyboardInterrupt  # the job is killed while sampling group 3
        return crash(group, prompt, seeds)

    with pytest.raises(KeyboardInterrupt):
        generate_groups(resumed, PROMPTS, SPLITS, 4, crashing, _score, seed=7, log=lambda s: None)
    with open(os.path.join(resumed, "groups.jsonl"), "a") as fh:
        fh.write('{"group": 3, "prom')  # and a line torn half-way
    assert [g["group"] for g in load_groups(resumed)] == [0, 1, 2]
    calls.clear()
    assert generate_groups(resumed, PROMPTS, SPLITS, 4, _sample(calls), _score, seed=7, log=lambda s: None) == 2
    assert calls == [3, 4]  # only the missing groups are sampled
    assert load_groups(resumed) == load_groups(straight)
    for g in load_groups(straight):
        np.testing.assert_array_equal(np.load(os.path.join(resumed, g["latents"])),
                                      np.load(os.path.join(straight, g["latents"])))
    assert generate_groups(resumed, PROMPTS, SPLITS, 4, _sample(calls), _score, seed=7, log=lambda s: None) == 0


def test_seeds_and_prompt_checks(tmp_path):
    assert sample_seeds(0, 1, 3) == sample_seeds(0, 1, 3) != sample_seeds(0, 2, 3)
    assert len(set(sample_seeds(0, 1, 8))) == 8
    out = str(tmp_path / "p")
    generate_groups(out, PROMPTS[:2], SPLITS[:2], 2, _sample([]), _score, log=lambda s: None)
    with pytest.raises(ValueError, match="groups.jsonl:1: group 0 was made for prompt"):
        generate_groups(out, ["other"] + PROMPTS[1:2], SPLITS[:2], 2, _sample([]), _score, log=lambda s: None)
    with pytest.raises(ValueError, match="group_size"):
        generate_groups(out, PROMPTS, SPLITS, 1, _sample([]), _score)


def test_write_pairs_ranks_each_group(tmp_path):
    out = str(tmp_path / "w")
    generate_groups(out, PROMPTS, SPLITS, 4, _sample([]), _score, seed=1, log=lambda s: None)
    pairs = write_pairs(out, "epi_sampson", EPIPOLAR_DPO)
    assert len(pairs) == len(PROMPTS)
    for p, g in zip(pairs, load_groups(out)):
        s = g["scores"]["epi_sampson"]
        assert (p["winner"], p["loser"]) == (int(np.argmin(s)), int(np.argmax(s))) and p["score_w"] < p["score_l"]
    on_disk = [json.loads(line) for line in open(os.path.join(out, "pairs_epi_sampson.jsonl"))]
    assert on_disk == pairs
    gpa = write_pairs(out, "epi_sampson", VIDEOGPA, motion_metric="motion", name="videogpa")
    assert os.path.exists(os.path.join(out, "pairs_videogpa.jsonl")) and len(gpa) <= len(PROMPTS)
    with pytest.raises(KeyError, match="not 'nope'"):
        write_pairs(out, "nope", EPIPOLAR_DPO)
