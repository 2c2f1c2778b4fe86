"""Orbax checkpoints: converted model parameters (param-only) and, for training, the full train state.

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


class TrainCheckpointer:
    """Resumable training checkpoints: the train-state pytree plus JSON metadata (data-iterator position, config).

    Saves are asynchronous (training continues while orbax writes) and atomic (a step directory appears only once
    complete; an interrupted save leaves nothing a restore would pick up). `keep` newest steps are retained.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts saving `state` (a pytree of arrays) and `meta` (JSON-serialisable) as step `step`."""
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores (step, state, meta); `abstract_state` gives structure, dtypes and shardings.

        Raises FileNotFoundError when there is no checkpoint to restore.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)), abstract_state
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
        return step, restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
