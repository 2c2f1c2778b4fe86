"""Does a pretrained toy DiT reproduce its data's mix of smooth and jittered cameras?

The toy world's captions never mention the jitter, so a DiT trained on them should produce jittery and smooth videos
for the same prompt in the data's proportion (about half jittered) — the defect VGGRPO exists to remove. This module
measures it without any geometry model:

    data      training clips (pixels) with their recorded jitter labels
    recon     the same clips through the VAE (encode → decode of the means): the decoder path samples take
    samples   ODE samples of held-out captions (Wan schedule and shift, CFG), decoded by the same VAE

Every video gets the pixel-space frame-smoothness score (`evaluation.frame_smoothness`, 1 for constant-rate change),
which separates jittered from smooth toyworld cameras. The jitter threshold is calibrated on `recon` against the
labels (the most accurate split; its accuracy on `recon` and on `data` is reported), then applied to the samples: the
report gives the fraction of jittery videos and the score quantiles of all three sets.

Latents are the DiT's: normalized by the VAE's latents_mean/std (what the fine-tuning job trains on).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.evaluation import frame_smoothness
from vggrpo_jax.rl.rollout import ode_sample
from vggrpo_jax.rl.schedule import wan_sigmas

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def best_threshold(scores: np.ndarray, jittered: np.ndarray) -> tuple[float, float]:
    """The frame-smoothness threshold τ that best separates the labels (jittered ⇔ score < τ), and its accuracy.

    scores (N,), jittered (N,) bool with both classes present; τ is the midpoint between two neighbouring scores."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(jittered, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and jittered must be (N,) alike, got {s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("best_threshold needs both jittered and smooth clips")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1e-9], (u[1:] + u[:-1]) / 2, [u[-1] + 1e-9]])
    acc = np.array([np.mean((s < t) == y) for t in cands])
    i = int(np.argmax(acc))
    return float(cands[i]), float(acc[i])


def summary(scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """{n, jittery_fraction (score < threshold), mean, quantiles {q: value}} of a set's frame-smoothness scores."""
    s = np.asarray(scores, np.float64)
    return {"n": int(s.size), "jittery_fraction": float(np.mean(s < threshold)), "mean": float(s.mean()),
            "quantiles": {str(q): float(np.quantile(s, q)) for q in QUANTILES}}


def sample_latents(dit: Any, cond: np.ndarray, uncond: np.ndarray, latent_shape: Sequence[int], *, seed: int,
                   num_steps: int = 20, shift: float = 3.0, cfg_scale: float = 5.0, batch_size: int = 16,
                   indices: Sequence[int] | None = None,
                   on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """ODE samples (N, C, F', H', W') float32 of the DiT for caption embeddings cond (N, L, D), uncond (1, L, D).

    Sample i starts from normal(fold_in(key(seed), indices[i])) (indices default 0..N−1), so it does not depend on
    the batching. on_batch(rows, latents) is called after each batch with the rows of cond it sampled."""
    graphdef, state = nnx.split(dit)
    sigmas = wan_sigmas(int(num_steps), float(shift))

    @jax.jit
    def run(state, x, c, u):
        velocity = lambda x, t, e: nnx.merge(graphdef, state)(x, t, e).astype(jnp.float32)  # noqa: E731
        return ode_sample(velocity, x, sigmas, cond=c, uncond=u, cfg_scale=cfg_scale)

    n = cond.shape[0]
    indices = range(n) if indices is None else list(indices)
    if len(indices) != n:
        raise ValueError(f"sample_latents: {len(indices)} indices for {n} captions")
    key = jax.random.key(int(seed))
    noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), tuple(latent_shape), jnp.float32))
                      for i in indices])
    out = []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size) % n  # one compiled shape; the wrapped rows are dropped
        z = np.asarray(run(state, jnp.asarray(noise[idx]), jnp.asarray(cond[idx]), jnp.asarray(uncond)))
        out.append(z[: min(batch_size, n - lo)])
        if on_batch is not None:
            on_batch(np.arange(lo, lo + len(out[-1])), out[-1])
    return np.concatenate(out)


def decode(vae: Any, latents: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Normalized latents (N, C, F', H', W') → videos (N, 3, F, H, W) in [−1, 1]."""
    fn = nnx.jit(lambda m, z: m.decode(m.denormalize_latents(z)))
    return _batched(lambda z: fn(vae, z), latents, batch_size)


def reconstruct(vae: Any, videos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Videos (N, 3, F, H, W) in [−1, 1] → their VAE reconstructions (the latent means decoded)."""
    fn = nnx.jit(lambda m, v: m.decode(m.encode(v)[0]))
    return _batched(lambda v: fn(vae, v), videos, batch_size)


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    for lo in range(0, len(x), batch_size):
        idx = np.arange(lo, lo + batch_size) % len(x)
        out.append(np.asarray(fn(jnp.asarray(x[idx])), np.float32)[: min(batch_size, len(x) - lo)])
    return np.concatenate(out)


def mix_report(dit: Any, text: Any, vae: Any, *, num_samples: int = 64, num_data: int = 64, seed: int = 0,
               num_steps: int = 20, shift: float = 3.0, cfg_scale: float = 5.0, data_config: str = "zoo",
               batch_size: int = 16) -> tuple[dict[str, Any], np.ndarray]:
    """(report, sample videos (num_samples, 3, F, H, W) in [−1, 1]) for the DiT `dit` with its text encoder `text`
    (a TextEncoder) and VAE `vae`: samples of the first `num_samples` held-out captions against the first
    `num_data` training clips (toyworld/<data_config>, rendered: the dataset's clips bit for bit)."""
    from vggrpo_jax.data import toyworld_tfds as T  # noqa: PLC0415
    from vggrpo_jax.data.toyworld_clips import load_split  # noqa: PLC0415

    train = load_split("train", num_data, source="render", data_config=data_config)
    clips = [train[i] for i in range(len(train))]
    videos = np.stack([T.video_to_model(c["video"]) for c in clips]).astype(np.float32)
    jittered = np.array([c["jittered"] for c in clips], bool)
    held = load_split("heldout", num_samples, source="render", data_config=data_config)
    captions = [held[i]["caption"] for i in range(len(held))]

    recon = reconstruct(vae, videos)
    scores = {"data": frame_smoothness(videos), "recon": frame_smoothness(recon)}
    threshold, acc_recon = best_threshold(scores["recon"], jittered)
    cond = text.encode(captions)[0]
    uncond = text.encode([""])[0]
    z_shape = (vae.config.z_dim, 1 + (videos.shape[2] - 1) // 4, videos.shape[3] // vae.config.spatial_stride,
               videos.shape[4] // vae.config.spatial_stride)
    z = sample_latents(dit, cond, uncond, z_shape, seed=seed, num_steps=num_steps, shift=shift, cfg_scale=cfg_scale,
                       batch_size=batch_size)
    samples = decode(vae, z)
    scores["samples"] = frame_smoothness(samples)
    report = {
        "threshold": threshold,
        "threshold_accuracy": {"recon": acc_recon, "data": float(np.mean((scores["data"] < threshold) == jittered))},
        "data_jittered_fraction": float(jittered.mean()),
        "sets": {k: summary(v, threshold) for k, v in scores.items()},
        "sampling": {"num_steps": int(num_steps), "shift": float(shift), "cfg_scale": float(cfg_scale),
                     "seed": int(seed), "captions": "toyworld heldout, seed order"},
        "latents": {"sample_std": float(z.std()), "sample_mean": float(z.mean())},
        "scores": {k: [float(x) for x in v] for k, v in scores.items()},
        "jittered": [bool(x) for x in jittered],
        "captions": captions,
    }
    return report, samples


def write_report(out_dir: str, report: dict[str, Any], samples: np.ndarray, *, fps: float = 8.0,
                 num_videos: int = 8) -> None:
    """out_dir/{mix.json, mix_scores.png (score histograms of data, recon, samples with the threshold),
    samples.png (a frame grid of the first videos), sample_XX.mp4}."""
    from vggrpo_jax.data.video import write_video  # noqa: PLC0415
    from vggrpo_jax.visualize import plot_histograms, save_frame_grid  # noqa: PLC0415

    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "mix.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "mix.json"))
    sets = report["sets"]
    plot_histograms({f"{k} (jittery {sets[k]['jittery_fraction']:.2f})": np.asarray(v)
                     for k, v in report["scores"].items()}, os.path.join(out_dir, "mix_scores.png"),
                    xlabel="frame smoothness (1 = constant-rate change)", vline=report["threshold"],
                    title=f"jitter threshold {report['threshold']:.3f}; data jittered "
                          f"{report['data_jittered_fraction']:.2f}")
    k = min(num_videos, len(samples))
    save_frame_grid(samples[:k], os.path.join(out_dir, "samples.png"),
                    row_titles=[c[:60] for c in report["captions"][:k]])
    for i in range(k):
        write_video(os.path.join(out_dir, f"sample_{i:02d}.mp4"), samples[i], fps=fps)


__all__ = ["best_threshold", "decode", "mix_report", "reconstruct", "sample_latents", "summary", "write_report"]
