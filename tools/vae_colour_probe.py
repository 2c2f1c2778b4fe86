"""Can a toy Wan VAE learn colour? A minute-long probe of the architecture's learning speed (issue 12's VAE bar).

    python tools/vae_colour_probe.py [--lr=3e-4] [--steps=600] [--base_dim=16] [--z_dim=16] [--decoder_base_dim=0]
                                     [--norm=rms|identity]

Data: single 32 × 32 frames of random solid colours on the 8-px latent grid (a 4 × 4 grid of patches, each colour
uniform in [−0.9, 0.9]³), so every latent cell holds exactly one colour — a linear code reconstructs it exactly.
Trains `WanVAE` (the toy job's dim_mult (1, 2, 4, 4), one residual block per stage, latent means decoded) with Adam
on a cosine schedule and the MSE alone, and prints held-out PSNR every 100 steps.

Why it exists: the toy VAE decodes the toyworld's boxes and spheres as grey blobs (held-out object PSNR ≈ 14 dB).
Measured with this probe (600 steps, lr 3e-4): Wan2.1's form 17.9 dB with Wan's RMS norm, 28.2 dB with
`--norm=identity`, 20.1 dB at `--base_dim=32`; `--form=wan22` 26.66 dB (and 34 s against 55 s). With `--frames=17`
(still patches, Wan2.2 form) 18.90 dB at step 300 against 23.66 dB for single frames.
`--norm=identity` replaces every RMSNorm by the identity: a diagnosis, not the Wan architecture.
"""

from __future__ import annotations

import time

from absl import flags

from vggrpo_jax import cli

LR = flags.DEFINE_float("lr", 3e-4, "peak Adam learning rate (cosine decay to 5 %)")
STEPS = flags.DEFINE_integer("steps", 600, "training steps (batch 4)")
BASE = flags.DEFINE_integer("base_dim", 16, "encoder base width")
Z = flags.DEFINE_integer("z_dim", 16, "latent channels")
DEC = flags.DEFINE_integer("decoder_base_dim", 0, "decoder base width (0: base_dim)")
FORM = flags.DEFINE_enum("form", "wan21", ["wan21", "wan22"],
                         "wan21: dim_mult (1, 2, 4, 4), three 2× stages; wan22: 2×2 patchify + residual blocks, "
                         "dim_mult (2, 4, 4), two 2× stages (the same 8× compression)")
NORM = flags.DEFINE_enum("norm", "rms", ["rms", "identity"], "rms: Wan's; identity: the norm removed (diagnosis)")
SEED = flags.DEFINE_integer("seed", 0, "init and data seed")
FRAMES = flags.DEFINE_integer("frames", 1, "frames per clip (1 + 4k; the patches stay still)")


def patches(seed: int, batch: int = 4, frames: int = 1):
    """(batch, 3, frames, 32, 32) float32: a 4 × 4 grid of 8-px solid colour patches, the same in every frame."""
    import numpy as np  # noqa: PLC0415

    colours = np.random.default_rng(seed).uniform(-0.9, 0.9, (batch, 3, 1, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(np.repeat(colours, frames, 2), 8, 3), 8, 4)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from ml_collections import ConfigDict  # noqa: PLC0415

    from vggrpo_jax.models.wan import vae_layers  # noqa: PLC0415
    from vggrpo_jax.models.wan.vae import WanVAE  # noqa: PLC0415
    from vggrpo_jax.toy_vae.job import model_config  # noqa: PLC0415  (the toy job's config → WanVAEConfig)

    if NORM.value == "identity":
        vae_layers.RMSNorm.__call__ = lambda self, x: x
    model = dict(base_dim=BASE.value, decoder_base_dim=DEC.value, z_dim=Z.value, num_res_blocks=1)
    if FORM.value == "wan22":
        model.update(dim_mult=(2, 4, 4), temperal_downsample=(True, True), is_residual=True, patch_size=2)
    else:
        model.update(dim_mult=(1, 2, 4, 4), temperal_downsample=(False, True, True), is_residual=False, patch_size=0)
    cfg = model_config(ConfigDict(dict(model=model)))
    graphdef, params = nnx.split(WanVAE(cfg, rngs=nnx.Rngs(SEED.value)), nnx.Param)
    tx = optax.adam(optax.cosine_decay_schedule(LR.value, STEPS.value, 0.05))
    opt = tx.init(params)

    def reconstruct(p, x):
        vae = nnx.merge(graphdef, p)
        return vae.decode(vae.encode(x)[0], clip=False)

    @jax.jit
    def step(p, o, x):
        loss, g = jax.value_and_grad(lambda q: jnp.mean((reconstruct(q, x) - x) ** 2))(p)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    test = jnp.asarray(patches(10**6 + SEED.value, 16, FRAMES.value))
    evaluate = jax.jit(lambda p: 10 * jnp.log10(4.0 / jnp.mean((jnp.clip(reconstruct(p, test), -1, 1) - test) ** 2)))
    t0 = time.perf_counter()
    for s in range(STEPS.value + 1):
        if s % 100 == 0:
            print(f"step {s:5d}  held-out PSNR {float(evaluate(params)):6.2f} dB  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        if s < STEPS.value:
            params, opt, _ = step(params, opt, jnp.asarray(patches(SEED.value * 10**7 + s, 4, FRAMES.value)))


if __name__ == "__main__":
    cli.run_absl(main)
