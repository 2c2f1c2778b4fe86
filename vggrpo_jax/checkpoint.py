"""Orbax checkpoints of parameters only (converted weights, saved LGMs): save_params / restore_params.

Train states (resumable runs) are vggrpo_jax.training.Checkpointer's business; this module stays at the bottom of
the dependency order so that converters and models can use it.

Writes are atomic: orbax writes into a temporary directory and renames it when complete, so a crash mid-save never
leaves a half-written checkpoint that a later run would load.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


def save_params(path: str, state: nnx.State | Any, force: bool = False) -> None:
    """Saves a pytree of arrays (e.g. nnx.state(model, nnx.Param)) to `path` (a directory orbax creates)."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite")
    tree = nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree, force=force)


def restore_params(path: str, abstract_state: nnx.State, shardings: Any = None) -> nnx.State:
    """Restores arrays saved by save_params into the structure of `abstract_state` (from nnx.eval_shape).

    With `shardings` (a pytree matching abstract_state), each array is read directly at its sharding.
    Raises FileNotFoundError for a missing directory and ValueError naming mismatched entries.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no orbax checkpoint at {path}")
    pure = nnx.to_pure_dict(abstract_state)
    if shardings is not None:
        shard_pure = nnx.to_pure_dict(shardings) if isinstance(shardings, nnx.State) else shardings
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), pure, shard_pure)
    else:
        # On this host's first device: without a target sharding orbax would reuse the devices recorded at save time,
        # which another host (or another topology) does not have.
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local), pure)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, target)
    state = jax.tree.map(lambda x: x, abstract_state)
    nnx.replace_by_pure_dict(state, restored)
    return state
