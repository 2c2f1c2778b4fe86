"""Shardings of the rl/ pytrees on a mesh: the sample batch over the "batch" logical axis, everything else replicated.

Trajectories are time-major, so their batch dim is axis 1 (latents, log_probs); schedules are replicated.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vggrpo_jax.parallel import current_rules, logical_sharding
from vggrpo_jax.rl.rollout import Trajectory


def _batch_axis_sharding(mesh: Mesh, shape: tuple[int, ...], axis: int, rules: Any) -> NamedSharding:
    axes: list[str | None] = [None] * len(shape)
    axes[axis] = "batch"
    return logical_sharding(tuple(axes), mesh, rules, shape=shape)


def trajectory_sharding(traj: Trajectory, mesh: Mesh, rules: Any = None) -> Trajectory:
    """A Trajectory of NamedShardings for `traj` (concrete or jax.eval_shape result): batch over "batch"."""
    rules = current_rules() if rules is None else rules
    rep = NamedSharding(mesh, PartitionSpec())
    return Trajectory(
        latents=_batch_axis_sharding(mesh, traj.latents.shape, 1, rules),
        log_probs=_batch_axis_sharding(mesh, traj.log_probs.shape, 1, rules),
        sigmas=rep,
        timesteps=rep,
        sde_mask=rep,
        train_steps=rep,
    )


def batch_leading_sharding(tree: Any, mesh: Mesh, rules: Any = None) -> Any:
    """NamedShardings splitting the leading dim of every leaf over "batch" (advantages, text pytrees)."""
    rules = current_rules() if rules is None else rules
    return jax.tree.map(lambda x: _batch_axis_sharding(mesh, tuple(x.shape), 0, rules), tree)


def replicated_sharding(tree: Any, mesh: Mesh) -> Any:
    """A fully replicated NamedSharding for every leaf of `tree` (trainable params, optimizer state, EMA)."""
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda _: rep, tree)
