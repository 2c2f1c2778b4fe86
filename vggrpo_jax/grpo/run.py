"""The GRPO job: VGGRPO post-training of a Wan model with latent geometry rewards (Flow-GRPO in latent space).

Entry points: `python -m vggrpo_jax.train` (train) and `python -m vggrpo_jax.evaluate` (evaluate_latest).

Data flow of one iteration (see trainer.py for the three jitted stages):

    prompt indices (grain, per host) ─► cached UMT5 embeddings, each prompt repeated K times
      ─► rollout: SDE sampling with the LoRA policy ─► trajectory and z0
      ─► LGM(z0) ─► r_motion, r_geo ─► group advantages
      ─► clipped surrogate + β·KL to the adapters-off base ─► AdamW on LoRA, EMA
      ─► metrics (tensorboard + metrics.jsonl, step time, samples/s and the seconds of each stage), periodic
         evaluation (grpo/evaluator.py), async orbax checkpoints — all through the training layer (vggrpo_jax/training)

A run resumes from the newest checkpoint in DIR/checkpoints: adapters, optimizer, EMA, step and the prompt
iterator's position are restored, and the noise of iteration i is derived from (seed, i) alone, so a resumed run
repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from vggrpo_jax import backbones as build
from vggrpo_jax import parallel, training
from vggrpo_jax.config import validate, validate_topology
from vggrpo_jax.config_files import load_config_file
from vggrpo_jax.data.pipeline import PromptBatches
from vggrpo_jax.errors import ConfigError, PathNotFoundError
from vggrpo_jax.evaluation import write_report
from vggrpo_jax.grpo.evaluator import Evaluator
from vggrpo_jax.grpo.report import write_run_report
from vggrpo_jax.grpo.trainer import GRPOTrainer, latent_shape


def _log(message: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(f"[vggrpo] {message}")


# ------------------------------------------------------------------------------------------------ the LGM
def build_geometry(config: Any, workdir: str) -> tuple[Any, Any, Any]:
    """(VAE, Any4D, LGM).

    With lgm.checkpoint: the VAE and Any4D come from config.vae / config.any4d and the LGM from that directory.
    With lgm.build_config instead (toy runs): the LGM is first constructed by the LGM job (lgm/pipeline.py) with that
    config in <workdir>/lgm (resumable; skipped when already there), and the VAE and Any4D are exactly the ones it
    was built with (that config's sections and seed), so the LGM and its teacher always belong together.
    """
    from vggrpo_jax.lgm import pipeline  # noqa: PLC0415  (the LGM job: only toy runs build their LGM here)
    from vggrpo_jax.lgm.model import load_lgm  # noqa: PLC0415

    if config.lgm.checkpoint:
        source = config
        for key, what in (("vae", "Wan VAE checkpoint"), ("any4d", "Any4D checkpoint")):
            if not config[key].checkpoint and not config.allow_random_init:
                build._require("", f"{key}.checkpoint", what)
        path = build._require(config.lgm.checkpoint, "lgm.checkpoint",
                              "LGM directory written by vggrpo_jax.train_lgm")
    elif config.lgm.build_config:
        source = load_config_file(config.lgm.build_config)  # its own relative paths: against its directory
        path = os.path.join(workdir, "lgm", "lgm")
        if not os.path.isfile(os.path.join(path, "lgm.json")):
            pipeline.run(source, os.path.join(workdir, "lgm"))
    else:
        raise ConfigError("config.lgm.checkpoint is empty: give the LGM directory written by vggrpo_jax.train_lgm "
                          "(or config.lgm.build_config to build one first)")
    vae = build.build_vae(source)
    any4d = build.build_any4d(source)
    return vae, any4d, load_lgm(path, any4d)


# ------------------------------------------------------------------------------------------------ the run
class Run:
    """Everything a GRPO run holds: components, trainer, text embeddings, data iterator, state."""

    def __init__(self, config: Any, workdir: str):
        self.config, self.workdir = config, workdir
        parallel.initialize_distributed(config.distributed)
        self.mesh = parallel.make_mesh(config.mesh)
        c = config
        validate_topology(c, dict(self.mesh.shape), jax.process_count())

        self.prompts = build.load_prompts(c)
        eval_set = build.load_prompts_with_splits(c, eval_split=True)[: int(c.eval.num_prompts)]
        self.eval_prompts = [p for p, _ in eval_set]
        self.eval_splits = [sp for _, sp in eval_set]
        self.text = build.build_text_encoder(c, workdir, self.mesh, self.prompts + self.eval_prompts)
        _log(f"encoding {len(self.prompts)} prompts (cached embeddings are reused)")
        self.trimmed = self.text.encode_trimmed(self.prompts)
        self.max_length = int(c.text.max_length)
        self.uncond = self.text.negative_embedding()[None]  # (1, L, D)
        text_dim = int(self.uncond.shape[-1])

        self.vae, self.any4d, self.lgm = build_geometry(c, workdir)
        shape = latent_shape(c, self.vae.config, int(self.vae.config.z_dim))
        self.policy = build.build_policy(c, self.mesh, text_dim, shape[0])
        lgm_graphdef, lgm_state = nnx.split(self.lgm)
        lgm_state = parallel.place_state(lgm_state, self.mesh)  # by its logical axes (replicated where it has none)
        self.trainer = GRPOTrainer(c, self.policy, lgm_graphdef, lgm_state, shape, self.mesh)
        self.state = self.trainer.init_state()
        self.batches = PromptBatches(len(self.prompts), int(c.rl.prompts_per_batch), seed=int(c.seed))
        self.checkpoints = training.Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(c.train.keep_checkpoints))
        self.iteration = 0
        self.evaluator = None
        if int(c.eval.every) > 0 and self.eval_prompts:
            self.evaluator = self._make_evaluator()

    def _make_evaluator(self) -> Evaluator:
        c = self.config
        shards = self._batch_shards()
        prompts, splits = list(self.eval_prompts), list(self.eval_splits)
        while len(prompts) % shards:  # the sample batch must split evenly over the batch axes
            splits.append(splits[len(prompts) % len(self.eval_prompts)])
            prompts.append(prompts[len(prompts) % len(self.eval_prompts)])
        cond = build.pad_batch(self.text.encode_trimmed(prompts), self.max_length)
        connector = self.lgm.connector.config
        return Evaluator(
            self.trainer, self.vae, self.any4d, cond, self.uncond, prompts, mesh=self.mesh, num_steps=int(c.eval.num_steps),
            fps=int(c.video.fps), spatial_stride=int(connector.stride[-1]), view_frame_rule=self.lgm.view_frame_rule,
            rgb_rewards=bool(c.eval.rgb_rewards), write_videos=bool(c.eval.write_videos), seed=int(c.seed) + 7,
            splits=splits, num_records=len(self.eval_prompts),
        )

    def _batch_shards(self) -> int:
        spec = parallel.batch_sharding(self.mesh, 1).spec[0]
        axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
        return int(np.prod([self.mesh.shape[a] for a in axes]))

    # -------------------------------------------------------------------------------------------- resume
    def restore(self) -> bool:
        """Restores the newest checkpoint, if any; returns whether one was found."""
        if self.checkpoints.latest_step() is None:
            return False
        # Restored at the live state's shardings (Adam moments and EMA sharded like the adapters).
        _, self.state, meta = self.checkpoints.restore(self.state, data=self.batches)
        self.iteration = int(meta["iteration"])
        _log(f"resumed from {self.checkpoints.directory} at iteration {self.iteration}")
        return True

    def save(self, wait: bool = False) -> None:
        self.checkpoints.save(self.iteration, self.state, {"iteration": self.iteration}, data=self.batches, wait=wait)

    # -------------------------------------------------------------------------------------------- one iteration
    def _cond_batch(self, indices: Sequence[int]) -> jax.Array:
        """This host's prompts, each repeated K times (rows grouped by prompt) → a global, batch-sharded array."""
        k = int(self.config.rl.group_size)
        local = build.pad_batch([self.trimmed[i] for i in indices for _ in range(k)], self.max_length)
        return parallel.host_local_to_global(local, self.mesh)

    def step(self, timer: training.StepTimer | None = None) -> dict[str, float]:
        """One iteration (rollout → rewards → update); with `timer`, the seconds of each stage are measured."""
        indices = next(self.batches)
        cond = self._cond_batch(indices)
        key = jax.random.fold_in(jax.random.key(int(self.config.seed)), self.iteration)
        uncond = parallel.replicate(jnp.asarray(self.uncond), self.mesh)
        self.state, metrics, _ = self.trainer.iteration(self.state, cond, uncond, key, timer=timer)
        self.iteration += 1
        metrics["train/num_skipped"] = float(jax.device_get(self.state.num_skipped))
        metrics["train/updates"] = float(jax.device_get(self.state.step))
        if metrics.get("train/skipped", 0.0) > 0:
            logging.warning("iteration %d: non-finite reward/loss/gradient; the update was skipped", self.iteration)
        return metrics

    def evaluate(self) -> dict[str, float]:
        return self.evaluator.run(self.state.ema_params, self.iteration, os.path.join(self.workdir, "samples"))

    def report(self) -> dict | None:
        """<workdir>/report.md: the EMA adapters against the base (adapters zeroed) on the eval prompts."""
        base = jax.tree.map(jnp.zeros_like, self.policy.lora)
        _log(f"report: base against step {self.iteration} on {self.evaluator.num_records} held-out prompts")
        out = write_run_report(self.config, self.workdir, self.evaluator, base, self.state.ema_params, self.iteration)
        if out is not None:
            _log(f"wrote {os.path.join(self.workdir, 'report.md')}")
        return out


def train(config: Any, workdir: str) -> list[dict[str, float]]:
    """Runs (or resumes) GRPO until config.train.num_iterations; returns the metrics of the iterations it ran.

    Every iteration's metrics go to workdir/metrics.jsonl and tensorboard with perf/step_seconds,
    perf/samples_per_second and perf/{rollout,rewards,update}_seconds; the returned history holds the training and
    evaluation metrics only (timings differ between runs). SIGTERM/SIGINT: the iteration finishes, a checkpoint is
    written and the run exits non-zero; the same command resumes it.
    """
    config = validate(config)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=2))
    run = Run(config, workdir)
    run.restore()
    writer = training.MetricWriter(workdir)
    total = int(config.train.num_iterations)
    history = []
    trainable, frozen = run.policy.num_params()
    _log(f"policy: {trainable:,} trainable LoRA parameters, {frozen:,} frozen")
    loop = training.TrainLoop(
        total, run.iteration, writer=writer,
        samples_per_step=int(config.rl.prompts_per_batch) * int(config.rl.group_size),
        log_every=int(config.train.log_every), checkpoint=lambda _: run.save(),
        checkpoint_every=int(config.train.checkpoint_every), checkpoint_wait=run.checkpoints.wait,
        profile_steps=int(config.train.profile_steps), workdir=workdir, desc="GRPO",
        postfix=("reward/motion_mean", "reward/geo_mean", "train/kl"),
        # the state of a skipped update is the previous, finite one; N skips in a row stop the run
        max_consecutive_skips=int(config.train.max_consecutive_skips), skip_key="train/skipped",
    )
    if run.evaluator is not None:
        loop.every(int(config.eval.every), lambda _: run.evaluate())
    try:
        with loop:
            for it in loop:
                metrics = run.step(loop.timer)
                values = loop.step_done(it, metrics)
                history.append({"step": it, **{k: v for k, v in values.items() if not k.startswith("perf/")}})
        if run.evaluator is not None and bool(config.eval.report):
            run.report()
    finally:
        run.checkpoints.close()
        writer.close()
    return history


def evaluate_latest(config: Any, workdir: str) -> dict[str, float]:
    """Evaluates the newest checkpoint of `workdir` (EMA adapters) and writes eval metrics, samples and the report
    `eval_XXXXXX/report.{md,json}` (per-split metrics; `tools/compare_reports.py` gives win rates between two);
    with eval.report, also the run report `<workdir>/report.md` (base against this checkpoint, grpo/report.py)."""
    config = validate(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not (os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))):  # before building anything
        raise PathNotFoundError(f"no checkpoint to evaluate in {ckpt_dir}")
    run = Run(config, workdir)
    if not run.restore():
        raise PathNotFoundError(f"no checkpoint to evaluate in {workdir}/checkpoints")
    if run.evaluator is None:
        run.evaluator = run._make_evaluator()
    metrics = run.evaluate()
    with open(os.path.join(workdir, f"eval_{run.iteration:06d}.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    if jax.process_index() == 0:  # per-split means ± s.e. over the eval prompts: eval_XXXXXX/report.{md,json}
        write_report(os.path.join(workdir, f"eval_{run.iteration:06d}"), {f"step_{run.iteration}": run.evaluator.records})
    if bool(config.eval.report):  # base against this checkpoint: <workdir>/report.md, as at the end of training
        run.report()
    run.checkpoints.close()
    return metrics
