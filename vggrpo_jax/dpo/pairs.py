"""Preference-pair generation as a resumable job: sample K videos per prompt from the base model, score them, keep
everything on disk, and rank into (winner, loser) pairs at the end — re-ranking with another metric or rule needs
no new samples.

Layout of the output directory:

    groups.jsonl            one line per finished prompt group, appended and fsync'd after its latents are on disk:
                            {"group": i, "prompt", "split", "seeds": [K ints], "latents": "latents/g000000.npy",
                             "scores": {name: [K floats]}}
    latents/g{i:06d}.npy    (K, C, F', H', W') float32: the clean latents the DPO step trains on
    pairs_{name}.jsonl      from `write_pairs`: {"group", "prompt", "split", "winner", "loser", "score_w",
                             "score_l", "latents"} (winner/loser index into the group's K samples)

A restart skips the groups already in groups.jsonl (a torn last line from a crash is dropped) and must be given
the same prompts: a group whose stored prompt differs is an error naming the line. Sample k of group i uses the seed
`sample_seeds(seed, i, K)[k]`, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from vggrpo_jax.evaluation.preference import PairRule, select_pair

SampleFn = Callable[[int, str, Sequence[int]], np.ndarray]  # (group, prompt, seeds) → latents (K, ...)
ScoreFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # latents (K, ...) → {name: (K,)}


def sample_seeds(seed: int, group: int, k: int) -> list[int]:
    """K sampling seeds of prompt group `group`, a function of (seed, group) alone."""
    return [int(x) for x in np.random.SeedSequence([int(seed), int(group)]).generate_state(k, np.uint32) >> 1]


def load_groups(out_dir: str) -> list[dict]:
    """The finished groups in `out_dir/groups.jsonl` (newline-terminated lines; a torn final line is ignored)."""
    path = os.path.join(out_dir, "groups.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        lines = fh.read().split("\n")[:-1]  # the text after the last newline is a line torn by a crash: ignored
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
    return out


def generate_groups(out_dir: str, prompts: Sequence[str], splits: Sequence[str], group_size: int,
                    sample_fn: SampleFn, score_fn: ScoreFn, *, seed: int = 0,
                    log: Callable[[str], None] = print) -> int:
    """Samples and scores every prompt group not yet in `out_dir`; returns how many groups it added."""
    if group_size < 2:
        raise ValueError(f"a preference group needs group_size ≥ 2 samples, got {group_size}")
    if len(splits) != len(prompts):
        raise ValueError(f"prompts and splits differ in length: {len(prompts)} vs {len(splits)}")
    os.makedirs(os.path.join(out_dir, "latents"), exist_ok=True)
    done = {}
    for line, g in enumerate(load_groups(out_dir), 1):
        i = int(g["group"])
        if i >= len(prompts) or g["prompt"] != prompts[i]:
            raise ValueError(f"{out_dir}/groups.jsonl:{line}: group {i} was made for prompt {g['prompt']!r}, "
                             f"which is not prompt {i} of this run; use a fresh directory for another prompt set")
        if not os.path.exists(os.path.join(out_dir, g["latents"])):
            raise FileNotFoundError(f"{out_dir}/groups.jsonl:{line}: latents {g['latents']} are missing")
        done[i] = g
    _drop_torn_tail(out_dir)
    added = 0
    with open(os.path.join(out_dir, "groups.jsonl"), "a") as fh:
        for i, prompt in enumerate(prompts):
            if i in done:
                continue
            seeds = sample_seeds(seed, i, group_size)
            latents = np.asarray(sample_fn(i, prompt, seeds), np.float32)
            if latents.shape[0] != group_size:
                raise ValueError(f"sample_fn returned {latents.shape[0]} samples for group {i}, expected {group_size}")
            scores = {k: np.asarray(v, np.float64) for k, v in score_fn(latents).items()}
            bad = {k: v.shape for k, v in scores.items() if v.shape != (group_size,)}
            if bad:
                raise ValueError(f"score_fn must return one value per sample ({group_size},), got {bad}")
            rel = os.path.join("latents", f"g{i:06d}.npy")
            tmp = os.path.join(out_dir, rel + ".tmp.npy")
            np.save(tmp, latents)
            os.replace(tmp, os.path.join(out_dir, rel))  # the latents exist before the line that names them
            record = {"group": i, "prompt": prompt, "split": str(splits[i]), "seeds": seeds, "latents": rel,
                      "scores": {k: [float(x) for x in v] for k, v in scores.items()}}
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            added += 1
            log(f"preference group {i + 1}/{len(prompts)}: " +
                ", ".join(f"{k} {np.nanmin(v):.4g}…{np.nanmax(v):.4g}" for k, v in scores.items()))
    return added


def _drop_torn_tail(out_dir: str) -> None:
    """Truncate groups.jsonl after its last complete line, so appending starts on a fresh line."""
    path = os.path.join(out_dir, "groups.jsonl")
    if not os.path.exists(path):
        return
    with open(path, "rb") as fh:
        data = fh.read()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)


def write_pairs(out_dir: str, metric: str, rule: PairRule, *, motion_metric: str | None = None,
                name: str | None = None) -> list[dict]:
    """Ranks every finished group by `metric` under `rule` and writes `pairs_{name or metric}.jsonl`."""
    groups = load_groups(out_dir)
    if not groups:
        raise ValueError(f"no finished groups in {out_dir}/groups.jsonl: run generate_groups first")
    pairs = []
    for g in groups:
        if metric not in g["scores"] or (motion_metric and motion_metric not in g["scores"]):
            raise KeyError(f"group {g['group']} has scores {sorted(g['scores'])}, not {metric!r}"
                           + (f" and {motion_metric!r}" if motion_metric else ""))
        s = g["scores"][metric]
        pick = select_pair(s, rule, g["scores"][motion_metric] if motion_metric else None)
        if pick is None:
            continue
        w, l = pick
        pairs.append({"group": g["group"], "prompt": g["prompt"], "split": g["split"], "winner": w, "loser": l,
                      "score_w": s[w], "score_l": s[l], "latents": g["latents"]})
    path = os.path.join(out_dir, f"pairs_{name or metric}.jsonl")
    with open(path + ".tmp", "w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in pairs)
    os.replace(path + ".tmp", path)
    return pairs


__all__ = ["generate_groups", "load_groups", "sample_seeds", "write_pairs"]
