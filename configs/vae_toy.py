"""The toy VAE: the Wan VAE in Wan2.2's form (2×2 patchify, residual stages) at base 16 / z 48, 8× spatial, 4× time.

Form, measured: Wan2.2's form with dim_mult (2, 4, 4) (patchify + two 2× stages: the same 8 × 8 × 4 compression and
5 × 8 × 8 latents as Wan2.1's three stages, so the DiT is unchanged) trains at 0.37 s/step against 0.74 s for
Wan2.1's form (base 16, dim_mult (1, 2, 4, 4)), reaching 23.16 / 23.90 dB held-out at steps 500 / 1000 against
22.94 / 23.72 dB; its last decoder stage is 32 channels wide at 32 × 32 instead of 16 at 64 × 64 (the same FLOPs).
On the colour-patch probe (tools/vae_colour_probe.py) it learns colour far faster: 26.66 dB in 600 steps against
17.91 dB. This config, 4000 steps: 27.27 dB held-out on 128 clips (SSIM 0.789, objects 19.07 dB) against 24.84 dB
(objects ≈ 14.4 dB) for the Wan2.1 form; still rising ≈ 0.3 dB per 500 steps at the end (the bar is 30 dB).
Shipped (this config: z 48, Wan2.2's latent width, 6000 steps, 0.45 s/step, 45 min): 28.81 dB held-out on 128 clips,
SSIM 0.848, objects 20.63 dB — below the 30 dB bar; the 16-clip curve was 23.42 / 25.49 / 27.14 / 28.03 / 28.67 /
28.99 dB at steps 500 / 2000 / 3000 / 4000 / 5000 / 6000 against 23.16 / 23.90 / 25.06 dB for z 16 at 500–1500: the
gain flattens as the cosine schedule ends, so the bar needs a longer schedule (≈ 1.5–2 h here), not a wider code.

    python -m vggrpo_jax.train_vae --config=configs/vae_toy.py --workdir=DIR

Trained on random crops of whole clips in time (17 frames × 32 × 32: the causal first frame + the four 4-frame chunks
of zoo.VIDEO, so every chunk-to-chunk cache position the decoder meets at evaluation is trained) of the toyworld/zoo
train split (anti-aliased, soft checkers: data/toyworld_tfds.py); evaluated on full held-out clips (zoo.VIDEO =
17 × 64 × 64). Why whole clips in time, measured: trained on 9-frame crops (first frame + 2 chunks) for 3000 steps,
held-out PSNR per frame fell from 28.4 dB (frame 0) and ≈ 26–27 dB (frames 1–8) to 17.4 dB at frame 16 — the 3rd and
4th chunks' caches were never trained — 22.0 dB over the clip; with 17-frame crops (batch 4, the same step time) the
clip reached 24.2 dB at step 1500 against 22.0 dB. Widths and crop size were chosen on measured throughput
(benchmarks/vae_train_step.py): the Wan widening costs 1.3× the step time of all-16 widths (0.25 M parameters),
which stalled at 22.4 dB held-out after 500 steps, below a 16-component linear code of the same blocks (26.5 dB).
Loss: L1 + 4·MSE (the bar is PSNR) + ½ spatial-gradient L1 (keeps edges sharp at this size) + a small KL. Exports
weights + manifest to `export.dir` when done.
A quick run: --config.train.steps=20 --config.data.num_train=16 --config.eval.num_clips=4 --config.eval.every=0
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # decoder_base_dim 0: the encoder's base_dim (Wan2.2 widens its decoder). Measured, Wan2.1 form z 48 / decoder
    # 32: 2.2× the step time. Where this VAE stalls (≈ 25 dB; boxes and spheres decode as grey blobs, held-out object
    # PSNR ≈ 14 dB, `heldout/psnr_objects`): it learns slowly, whatever the data, loss, lr or width — overfitting
    # 8 training clips it reaches only 20.4 dB train PSNR at step 260 (21.2 dB at 600), and the same at lr 3e-4
    # (20.2), with the MSE alone (20.4) or at base 32 (20.5, 3.5× the step time); single frames: 23.6 dB at 380.
    c.model = ml_collections.ConfigDict(dict(base_dim=16, decoder_base_dim=0, z_dim=48, dim_mult=(2, 4, 4),
                                             num_res_blocks=1, temperal_downsample=(True, True), is_residual=True,
                                             patch_size=2))
    c.data = ml_collections.ConfigDict(dict(
        data_dir="", config="zoo", num_train=2048, crop_frames=17, crop_size=32, flip=True, colour_prob=0.0,
    ))  # colour_prob: random colour transforms (toy_vae.data.recolour); measured at 0.5: 20.85 / 22.54 dB held-out
    # at steps 250 / 500 (objects 12.2 / 13.6 dB) against 23.16 / 13.93 dB at 500 without — so off.
    c.loss = ml_collections.ConfigDict(dict(l1=1.0, mse=4.0, grad=0.5, kl=1e-5))
    c.optim = ml_collections.ConfigDict(dict(
        name="adam", lr=2e-3, schedule="cosine", warmup_steps=50, end_lr_fraction=0.05, grad_clip=1.0,
    ))  # fmt: skip
    c.train = ml_collections.ConfigDict(dict(
        steps=6000, batch_size=4, log_every=20, checkpoint_every=200, profile_steps=0,
        max_consecutive_skips=10,  # stop with an error after this many non-finite (skipped) updates in a row
    ))  # fmt: skip
    # Held-out PSNR / SSIM on full decoded clips (latent means, no sampling); `every` 0 = only at the end.
    c.eval = ml_collections.ConfigDict(dict(every=500, num_clips=16, final_num_clips=128, batch_size=4,
                                            stats_clips=128))
    # Where the finished model is written (weights + manifest); "" = <workdir>/export.
    c.export = ml_collections.ConfigDict(dict(dir=""))
    return c
