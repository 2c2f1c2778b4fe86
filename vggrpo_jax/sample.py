"""Sample videos of a prompt file from a GRPO run (or the base model), optionally with LGM guidance.

    python -m vggrpo_jax.sample --config=configs/toy.py --workdir=DIR --checkpoint=latest|base|N \
        --prompts=FILE --out=OUT --seed=S [--num_steps=N] [--batch_size=B] \
        [--config.guidance.scale=0.5 --config.guidance.steps=::2 --config.guidance.weights.geo=0 ...]

Writes OUT/000000.mp4, … and OUT/samples.jsonl (index, prompt, seed, checkpoint, LGM rewards); see sampling.py.
"""

from __future__ import annotations

from absl import flags

# Its own flags; --config and --workdir, as every job takes them, come from cli.run_job.
CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'base' (adapters off) or a step number")
PROMPTS = flags.DEFINE_string("prompts", None, "prompt file (.txt one per line, or .jsonl)", required=True)
OUT = flags.DEFINE_string("out", None, "output directory for the mp4s and samples.jsonl", required=True)
SEED = flags.DEFINE_integer("seed", 0, "noise seed: video i starts from fold_in(key(seed), i)")
NUM_STEPS = flags.DEFINE_integer("num_steps", None, "ODE steps (default: config.eval.num_steps)")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "videos per sampler call (0: one per batch shard of the mesh)")


def main(config, workdir: str) -> None:
    from vggrpo_jax.sampling import sample  # noqa: PLC0415

    records = sample(config, workdir, CHECKPOINT.value, PROMPTS.value, OUT.value, SEED.value,
                     NUM_STEPS.value, BATCH_SIZE.value)
    print(f"wrote {len(records)} videos and samples.jsonl to {OUT.value}")


if __name__ == "__main__":
    from vggrpo_jax import cli  # noqa: PLC0415

    cli.run_job(main, quiet_logs=True)
