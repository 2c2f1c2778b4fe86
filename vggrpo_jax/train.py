"""VGGRPO post-training of a Wan model with latent geometry rewards (Flow-GRPO in latent space).

    python -m vggrpo_jax.train --config=configs/wan21.py --workdir=DIR [--config.rl.group_size=8 ...]

Data flow of one iteration (see trainer.py for the three jitted stages):

    prompt indices (grain, per host) ─► cached UMT5 embeddings, each prompt repeated K times
      ─► rollout: SDE sampling with the LoRA policy ─► trajectory and z0
      ─► LGM(z0) ─► r_motion, r_geo ─► group advantages
      ─► clipped surrogate + β·KL to the adapters-off base ─► AdamW on LoRA, EMA
      ─► metrics (tensorboard + metrics.jsonl), periodic evaluation (evaluate.py), async orbax checkpoints

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
from absl import app, logging
from flax import nnx
from tqdm import tqdm

from vggrpo_jax import build, parallel
from vggrpo_jax.checkpoint import TrainCheckpointer
from vggrpo_jax.config import define_flags, validate, validate_topology
from vggrpo_jax.data.pipeline import PromptBatches
from vggrpo_jax.errors import PathNotFoundError
from vggrpo_jax.evaluate import Evaluator
from vggrpo_jax.evaluation import write_report
from vggrpo_jax.metrics import MetricWriter
from vggrpo_jax.trainer import GRPOTrainer, latent_shape
from vggrpo_jax.training.guard import SkipGuard

FLAGS_CONFIG, FLAGS_WORKDIR = define_flags()  # also used by `python -m vggrpo_jax.evaluate`


def _log(message: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(f"[vggrpo] {message}")


# ------------------------------------------------------------------------------------------------ checkpoint trees
def _flatten(tree: Any) -> dict[str, Any]:
    """A pytree → {'path': leaf} with readable keys (orbax stores plain dicts most robustly)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _unflatten(like: Any, flat: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    missing = [jax.tree_util.keystr(p) for p, _ in leaves if jax.tree_util.keystr(p) not in flat]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} train-state entries, e.g. {missing[:5]}")
    return jax.tree_util.tree_unflatten(treedef, [flat[jax.tree_util.keystr(p)] for p, _ in leaves])


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


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

        self.vae, self.any4d, self.lgm = build.build_geometry(c, workdir)
        shape = latent_shape(c, self.vae.config, int(self.vae.config.z_dim))
        self.policy = build.build_policy(c, self.mesh, text_dim, shape[0])
        lgm_graphdef, lgm_state = nnx.split(self.lgm)
        lgm_state = parallel.place_state(lgm_state, self.mesh)  # by its logical axes (replicated where it has none)
        self.trainer = GRPOTrainer(c, self.policy, lgm_graphdef, lgm_state, shape, self.mesh)
        self.state = self.trainer.init_state()
        self.batches = PromptBatches(len(self.prompts), int(c.rl.prompts_per_batch), seed=int(c.seed))
        self.checkpoints = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=int(c.train.keep_checkpoints))
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
        step = self.checkpoints.latest_step()
        if step is None:
            return False
        _, flat, meta = self.checkpoints.restore(_flatten(_abstract(self.state)))
        self.state = _unflatten(self.state, flat)
        self.batches.set_state(meta["data"])
        self.iteration = int(meta["iteration"])
        _log(f"resumed from {self.checkpoints.directory} at iteration {self.iteration}")
        return True

    def save(self) -> None:
        meta = {"data": self.batches.get_state(), "iteration": self.iteration}
        self.checkpoints.save(self.iteration, _flatten(self.state), meta)

    # -------------------------------------------------------------------------------------------- one iteration
    def _cond_batch(self, indices: Sequence[int]) -> jax.Array:
        """This host's prompts, each repeated K times (rows grouped by prompt) → a global, batch-sharded array."""
        k = int(self.config.rl.group_size)
        local = build.pad_batch([self.trimmed[i] for i in indices for _ in range(k)], self.max_length)
        return parallel.host_local_to_global(local, self.mesh)

    def step(self) -> dict[str, float]:
        indices = next(self.batches)
        cond = self._cond_batch(indices)
        key = jax.random.fold_in(jax.random.key(int(self.config.seed)), self.iteration)
        uncond = parallel.replicate(jnp.asarray(self.uncond), self.mesh)
        self.state, metrics, _ = self.trainer.iteration(self.state, cond, uncond, key)
        self.iteration += 1
        metrics["train/num_skipped"] = float(jax.device_get(self.state.num_skipped))
        metrics["train/updates"] = float(jax.device_get(self.state.step))
        if metrics.get("train/skipped", 0.0) > 0:
            logging.warning("iteration %d: non-finite reward/loss/gradient; the update was skipped", self.iteration)
        return metrics

    def evaluate(self) -> dict[str, float]:
        return self.evaluator.run(self.state.ema_params, self.iteration, os.path.join(self.workdir, "samples"))


def train(config: Any, workdir: str) -> list[dict[str, float]]:
    """Runs (or resumes) GRPO until config.train.num_iterations; returns the metrics of the iterations it ran."""
    config = validate(config)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=2))
    run = Run(config, workdir)
    run.restore()
    writer = MetricWriter(workdir)
    total = int(config.train.num_iterations)
    history = []
    trainable, frozen = run.policy.num_params()
    _log(f"policy: {trainable:,} trainable LoRA parameters, {frozen:,} frozen")
    guard = SkipGuard(int(config.train.max_consecutive_skips))
    bar = tqdm(total=total, initial=run.iteration, desc="GRPO", disable=jax.process_index() != 0, dynamic_ncols=True)
    try:
        while run.iteration < total:
            metrics = run.step()
            it = run.iteration
            if run.evaluator is not None and (it % int(config.eval.every) == 0 or it == total):
                metrics.update(run.evaluate())
            if int(config.train.log_every) and (it % int(config.train.log_every) == 0 or it == total):
                writer.write(it, metrics)
            guard.update(it, metrics)  # the state of a skipped update is the previous, finite one
            if (int(config.train.checkpoint_every) and it % int(config.train.checkpoint_every) == 0) or it == total:
                run.save()
            history.append({"step": it, **metrics})
            bar.update(1)
            bar.set_postfix(motion=f"{metrics['reward/motion_mean']:.3f}", geo=f"{metrics['reward/geo_mean']:.3f}",
                            kl=f"{metrics['train/kl']:.2e}")
    finally:
        bar.close()
        run.checkpoints.close()
        writer.close()
    return history


def evaluate_latest(config: Any, workdir: str) -> dict[str, float]:
    """Evaluates the newest checkpoint of `workdir` (EMA adapters) and writes eval metrics, samples and the report
    `eval_XXXXXX/report.{md,json}` (per-split metrics; `tools/compare_reports.py` gives win rates between two)."""
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
    run.checkpoints.close()
    return metrics


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # orbax logs every checkpoint step at INFO; the progress bars and our warnings are what a person needs to see.
    logging.set_verbosity(logging.WARNING)
    train(FLAGS_CONFIG.value, FLAGS_WORKDIR.value)


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_absl(main)
