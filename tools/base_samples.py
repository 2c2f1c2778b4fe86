#!/usr/bin/env python
"""Samples of the toy world's base DiT, written as LGM calibration clips (the paper calibrates its LGM on a mix of
real and generated videos; configs/lgm_zoo.py reads these through data.generated.path).

    python tools/base_samples.py --out=DIR [--num_samples=256] [--split=train] [--num_steps=20] [--cfg_scale=5]
                                 [--seed=0] [--batch_size=16]

DIR/000000.npz, … hold `latents` (C, F', H', W', the DiT's normalised latents), `video` (3, F, H, W) in [−1, 1] (the
zoo VAE's decoding: what the RGB reward path sees) and `caption`: sample i is the ODE sample of the i-th caption of the
toyworld zoo `split` (seed order) from normal(fold_in(key(seed), i)) (as tools/dit_mix.py draws them). Existing files are kept, so an interrupted run
resumes where it stopped; DIR/samples.json records the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--split", default="train", choices=("train", "heldout"))
    p.add_argument("--num_steps", type=int, default=20)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--cfg_scale", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=16)
    a = p.parse_args(argv)
    for k in ("num_samples", "num_steps", "batch_size"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be ≥ 1")

    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from vggrpo_jax import zoo  # noqa: PLC0415
    from vggrpo_jax.data.toyworld_clips import load_split  # noqa: PLC0415
    from vggrpo_jax.sft.mix import sample_latents  # noqa: PLC0415

    settings = {"dit_sha256": zoo.manifest("dit")["sha256"], "vae_sha256": zoo.manifest("vae")["sha256"],
                "split": a.split, "num_steps": a.num_steps, "shift": a.shift, "cfg_scale": a.cfg_scale, "seed": a.seed,
                "noise": "sample i from normal(fold_in(key(seed), i))"}
    os.makedirs(a.out, exist_ok=True)
    meta = os.path.join(a.out, "samples.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            old = json.load(f)
        if {k: old.get(k) for k in settings} != settings:
            raise SystemExit(f"{meta}: written with other settings {old}; use another --out")
    with open(meta + ".tmp", "w") as f:
        json.dump({**settings, "num_samples": a.num_samples}, f, indent=1)
    os.replace(meta + ".tmp", meta)

    vae, dit, text = zoo.load("vae"), zoo.load("dit"), zoo.load("text")
    split = load_split(a.split, a.num_samples, source="render", data_config="zoo")
    frames, height, width = zoo.VIDEO
    z_shape = (vae.config.z_dim, 1 + (frames - 1) // 4, height // vae.config.spatial_stride,
               width // vae.config.spatial_stride)
    todo = [i for i in range(a.num_samples) if not os.path.isfile(os.path.join(a.out, f"{i:06d}.npz"))]
    if todo:
        captions = [split[i]["caption"] for i in todo]
        decode_fn = nnx.jit(lambda m, z: m.decode(m.denormalize_latents(z)))
        bar = tqdm(total=len(todo), desc="base samples", unit="clip")

        def save(rows, z):  # each batch is written as soon as it is sampled (atomic files: a rerun resumes)
            video = np.asarray(decode_fn(vae, jnp.asarray(z)), np.float32)
            for r, zi, vi in zip(rows, z, video):
                path = os.path.join(a.out, f"{todo[r]:06d}.npz")
                with open(path + ".tmp", "wb") as f:
                    np.savez(f, latents=zi, video=vi, caption=np.array(captions[r]))
                os.replace(path + ".tmp", path)
            bar.update(len(rows))

        sample_latents(dit, text.encode(captions)[0], text.encode([""])[0], z_shape, seed=a.seed,
                       num_steps=a.num_steps, shift=a.shift, cfg_scale=a.cfg_scale, batch_size=a.batch_size,
                       indices=todo, on_batch=save)
        bar.close()
    print(f"{a.num_samples} samples in {a.out}")


if __name__ == "__main__":
    main()
