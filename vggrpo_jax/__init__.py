"""vggrpo_jax: world-consistent video generation through GRPO with 4D latent rewards, in JAX/Flax NNX."""

import flax as _flax

# Parameters carry *logical* axis names (see vggrpo_jax.parallel.rules); they are mapped to a mesh only when a state is
# placed. Flax would otherwise try to shard every annotated variable eagerly at creation, which needs a global mesh.
_flax.config.update("flax_always_shard_variable", False)

__version__ = "0.1.0"
