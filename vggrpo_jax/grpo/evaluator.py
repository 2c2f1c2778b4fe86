"""Evaluation: ODE samples of held-out prompts with the EMA adapters, scored three ways.

    latent   the LGM on z0 (what training optimises)
    rgb      VAE decode → Any4D on the decoded frames (an independent judge: a gain must not exist only in the eyes of
             the model trained on)
    video    pixel metrics of the decoded videos, no geometry model at all: a frame-difference smoothness score,
             Epi. (SIFT + RANSAC + Sampson) and VBench-style motion smoothness / dynamic degree (`evaluation/`)

Each run also keeps one record per evaluated prompt (`Evaluator.records`: prompt, split, the row of the fixed eval
noise, every metric) for `evaluation.write_report` (per-split means ± s.e., win rates between checkpoints).

Writes, per evaluated step, `samples/step_XXXXXX/{i}.mp4` and `{i}_camera.png` (LGM camera path) on process 0.
Rewards are scored by rewards.geometry_rewards with the trainer's RewardOptions (the one reward assembly).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vggrpo_jax.evaluation import frame_smoothness, make_records, video_scores
from vggrpo_jax.grpo.trainer import GRPOTrainer
from vggrpo_jax.parallel import mesh_context, place_state, replicate, shard_batch, to_host
from vggrpo_jax.rewards import finite_stats, geometry_rewards


def sample_records(video: np.ndarray, latent: dict, rgb: dict | None, prompts: Sequence[str], splits: Sequence[str],
                   noise_seed: int, fps: int) -> list[dict]:
    """One report record per sample i < len(prompts): {"prompt", "split", "seed": i (the row of the eval noise drawn
    from `noise_seed`), "noise_seed", the pixel metrics of `video` (B, 3, F, H, W) in [−1, 1], latent_* and rgb_*
    rewards (motion, geo, e_trans, e_rot) from the LGM and RGB-path reward dicts}."""
    n = len(prompts)
    scores = video_scores(np.asarray(video[:n], np.float32), fps)
    for prefix, rewards in (("latent", latent), ("rgb", rgb)):
        for name in ("motion", "geo", "e_trans", "e_rot") if rewards is not None else ():
            scores[f"{prefix}_{name}"] = np.asarray(rewards[name], np.float64)[:n]
    records = make_records(prompts, list(range(n)), splits, scores)
    return [r | {"noise_seed": int(noise_seed)} for r in records]


class EvalResult(NamedTuple):
    """One evaluation: eval/* metrics, one record per real prompt, and their decoded videos (n, 3, F, H, W) in
    [−1, 1] and LGM cameras (n, V, 4, 4) camera-to-world, OpenCV axes."""

    metrics: dict[str, float]
    records: list[dict]
    video: np.ndarray
    c2w: np.ndarray


class Evaluator:
    """Samples and scores a fixed set of evaluation prompts (their embeddings are computed once)."""

    def __init__(self, trainer: GRPOTrainer, vae: Any, any4d: Any, cond: np.ndarray, uncond: np.ndarray,
                 prompts: Sequence[str], *, mesh: Any = None, num_steps: int, fps: int, spatial_stride: int, view_frame_rule: str,
                 rgb_rewards: bool = True, write_videos: bool = True, seed: int = 0,
                 splits: Sequence[str] | None = None, num_records: int | None = None):
        """`splits` (one per prompt, default "unsplit") label the report records; `num_records` counts the leading
        prompts that are real (the rest pad the batch to the mesh and are not recorded)."""
        from vggrpo_jax.lgm.rgb_path import RGBGeometryPath  # noqa: PLC0415

        self.trainer, self.prompts = trainer, list(prompts)
        self.splits = list(splits) if splits is not None else ["unsplit"] * len(self.prompts)
        if len(self.splits) != len(self.prompts):
            raise ValueError(f"Evaluator: {len(self.splits)} splits for {len(self.prompts)} prompts")
        self.num_records = len(self.prompts) if num_records is None else int(num_records)
        self.records: list[dict] = []
        self.cond, self.uncond = cond, uncond
        self.num_steps, self.fps, self.seed = int(num_steps), int(fps), int(seed)
        self.rgb_rewards, self.write_videos = rgb_rewards, write_videos
        rgb = RGBGeometryPath(vae, any4d, spatial_stride=spatial_stride, view_frame_rule=view_frame_rule)
        self._rgb_graphdef, self._rgb_state = nnx.split(rgb)
        vae_graphdef, self._vae_state = nnx.split(vae)
        self.mesh = mesh
        if mesh is not None:
            self._rgb_state = place_state(self._rgb_state, mesh)
            self._vae_state = place_state(self._vae_state, mesh)
            self.cond = shard_batch(np.asarray(cond), mesh)
            self.uncond = replicate(jnp.asarray(uncond), mesh)
        options = trainer.reward_options
        self._rgb = jax.jit(lambda s, z: geometry_rewards(nnx.merge(self._rgb_graphdef, s)(z), options))
        self._decode = jax.jit(lambda s, z: nnx.merge(vae_graphdef, s).decode(nnx.merge(vae_graphdef, s)
                                                                               .denormalize_latents(z)))
        self._roundtrip = jax.jit(lambda s, v: nnx.merge(vae_graphdef, s).decode(nnx.merge(vae_graphdef, s)
                                                                                 .encode(v)[0]))

    def score(self, lora: Any) -> EvalResult:
        """Samples the eval prompts with adapters `lora` (the same noise every call) and scores them; every host."""
        key = jax.random.key(self.seed)  # the same noise at every evaluation: curves compare like with like
        z0 = self.trainer.sample(lora, jnp.asarray(self.cond), jnp.asarray(self.uncond), key, self.num_steps)
        latent = self.trainer.latent_rewards(z0)
        with mesh_context(self.mesh):
            video = to_host(self._decode(self._vae_state, z0))  # every host: the gather is collective
        metrics = {"eval/frame_smoothness": float(np.mean(frame_smoothness(video)))}
        metrics.update(_summary("eval/latent", latent))
        rgb = None
        if self.rgb_rewards:
            with mesh_context(self.mesh):
                rgb = to_host(self._rgb(self._rgb_state, z0))
            metrics.update(_summary("eval/rgb", rgb))
        n = self.num_records
        records = sample_records(video, latent, rgb, self.prompts[:n], self.splits[:n], self.seed, self.fps)
        for name in ("epi_sampson", "epi_inlier_rate", "epi_failed", "motion_smoothness", "dynamic_degree"):
            x = np.asarray([r[name] for r in records], np.float64)
            if np.isfinite(x).any():  # none finite (e.g. too few SIFT matches on every clip): eval/epi_failed says so
                metrics[f"eval/{name}"] = float(np.mean(x[np.isfinite(x)]))
        c2w = np.asarray(to_host(latent["c2w"]))
        return EvalResult(metrics, records, np.asarray(video[:n]), c2w[:n])

    def roundtrip_psnr(self, video: np.ndarray) -> np.ndarray:
        """PSNR (dB, peak-to-peak 2) of the VAE's reconstruction of each video (n, 3, F, H, W) in [−1, 1]: a video
        on the data manifold reconstructs as well as real clips do; adversarial latents decode to frames that the
        encoder does not reproduce. Every host (the same videos on each)."""
        v = np.asarray(video, np.float32)
        with mesh_context(self.mesh):
            rec = to_host(self._roundtrip(self._vae_state, jnp.asarray(v)))
        mse = np.mean((np.asarray(rec, np.float64) - v) ** 2, axis=(1, 2, 3, 4))
        return 10.0 * np.log10(4.0 / np.maximum(mse, 1e-12))

    def run(self, lora: Any, step: int, out_dir: str | None) -> dict[str, float]:
        """Samples with adapters `lora` (e.g. the EMA) and returns eval/* metrics; writes media under out_dir."""
        result = self.score(lora)
        self.records = result.records
        if out_dir and self.write_videos and jax.process_index() == 0:
            self._write(result.video, result.c2w, os.path.join(out_dir, f"step_{step:06d}"))
        return result.metrics

    def _write(self, video: np.ndarray, c2w: np.ndarray, out: str) -> None:
        from vggrpo_jax.data.video import write_video  # noqa: PLC0415
        from vggrpo_jax.visualize import plot_camera_trajectory  # noqa: PLC0415

        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "prompts.txt"), "w") as fh:
            fh.write("\n".join(self.prompts[: len(video)]) + "\n")
        for i in range(min(len(video), len(self.prompts))):
            write_video(os.path.join(out, f"{i}.mp4"), video[i], fps=self.fps)
            plot_camera_trajectory(c2w[i], os.path.join(out, f"{i}_camera.png"), title=self.prompts[i][:80])


def _summary(prefix: str, rewards: dict) -> dict[str, float]:
    """{prefix}_{name} (the mean over the samples where the reward is finite; NaN if none) and
    {prefix}_{name}_nonfinite_frac for r_motion and r_geo: rewards.finite_stats, as the trainer's reward/* metrics."""
    out = {}
    for name in ("motion", "geo"):
        stats = finite_stats(np.asarray(rewards[name]))
        out[f"{prefix}_{name}"] = float(stats["mean"])
        out[f"{prefix}_{name}_nonfinite_frac"] = float(stats["nonfinite_frac"])
    return out
