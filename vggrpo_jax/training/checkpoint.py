"""Orbax checkpoints: converted parameters (`save_params` / `restore_params`) and resumable train states
(`Checkpointer`).

A train-state checkpoint is one orbax CheckpointManager step holding three items:

    state    the train state's leaves as a flat {path: array} dict (paths are `jax.tree_util.keystr` strings, so the
             files read like the pytree: "['params']['dense']['kernel']")
    layout   {path: [shape, dtype]} of those leaves, written as JSON; checked before any array is read, so a
             checkpoint of another model or config fails with one error naming the first differing leaf
    meta     free JSON: the data-iterator position, the step counter of the job, anything the job needs to resume

Writes are atomic: orbax writes a step into a temporary directory and renames it when complete, so a crash or a
preemption mid-save leaves no step that a later run would load. Typed PRNG keys are stored as their raw key data
and re-wrapped on restore. Restoring reads each array directly at its target sharding (the live leaf's sharding, or
an explicit `shardings` tree), so a state never has to fit on one device.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx


class LayoutMismatchError(ValueError):
    """A checkpoint's leaves differ from the live train state's (names, shapes or dtypes)."""


# ------------------------------------------------------------------------------------------------ params only
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


# ------------------------------------------------------------------------------------------------ flat trees
def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key)


def _dtype_name(leaf: Any) -> str:
    return str(leaf.dtype) if hasattr(leaf, "dtype") else str(np.asarray(leaf).dtype)


def flatten(tree: Any) -> dict[str, Any]:
    """A pytree → {keystr(path): leaf}; typed PRNG keys become their uint32 key data."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path): (jax.random.key_data(leaf) if _is_key(leaf) else leaf) for path, leaf in leaves
    }


def layout(tree: Any) -> dict[str, list]:
    """{path: [shape, dtype name]} of what `flatten(tree)` stores (arrays, ShapeDtypeStructs or scalars)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(_abstract_keys(tree))
    return {jax.tree_util.keystr(p): [list(np.shape(leaf)), _dtype_name(leaf)] for p, leaf in leaves}


def check_layout(saved: dict[str, list], live: dict[str, list], where: str) -> None:
    """Raises LayoutMismatchError naming the first leaf that is missing, extra, or of another shape/dtype."""
    missing = [k for k in live if k not in saved]
    extra = [k for k in saved if k not in live]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the live train state has {len(missing)} leaves the checkpoint lacks, first {missing[0]!r}")
        if extra:
            parts.append(f"the checkpoint has {len(extra)} leaves the live state lacks, first {extra[0]!r}")
        raise LayoutMismatchError(f"{where}: {'; '.join(parts)} (a checkpoint of another model or config?)")
    for k, (shape, dtype) in live.items():
        s_shape, s_dtype = saved[k]
        if list(s_shape) != list(shape) or s_dtype != dtype:
            raise LayoutMismatchError(
                f"{where}: leaf {k!r} is {tuple(s_shape)} {s_dtype} in the checkpoint but {tuple(shape)} {dtype} in "
                "the live train state (a checkpoint of another model or config?)"
            )


# ------------------------------------------------------------------------------------------------ train states
class Checkpointer:
    """Resumable train-state checkpoints in `directory`: one orbax step per saved step, the newest `keep` kept.

        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
        if ckpt.latest_step() is not None:
            step, state, meta = ckpt.restore(state, data=iterator)  # also restores the iterator's position
        ...
        ckpt.save(step, state, meta={"epoch": e}, data=iterator)
        ckpt.close()

    `data` is any object with get_state() → JSON-serialisable and set_state(state) (a grain DatasetIterator,
    data.pipeline.PromptBatches); its position is stored in meta["data"].

    Saves are asynchronous by default (training continues while orbax writes; `wait()` blocks) and atomic. Saving a
    step that is already on disk is a no-op, so a save on demand (preemption) right after a periodic save is safe.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        if int(keep) < 1:
            raise ValueError(f"keep must be ≥ 1 checkpoints, got {keep}")
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=int(keep), enable_async_checkpointing=async_save,
                                               create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict | None = None, data: Any = None, wait: bool = False) -> bool:
        """Starts saving `state` (a pytree of arrays) and `meta` (JSON) as `step`; returns False if it already exists.

        `data`: an iterator whose get_state() is stored as meta["data"]. `wait`: block until the step is on disk
        (use it before exiting, e.g. on preemption).
        """
        step = int(step)
        if step in self._manager.all_steps():
            if wait:
                self.wait()
            return False
        meta = dict(meta or {})
        if data is not None:
            meta["data"] = data.get_state()
        flat = flatten(state)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(flat),
                layout=ocp.args.JsonSave(layout(state)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,  # the caller decides when to save; orbax's own interval policy must not skip a step
        )
        if wait:
            self.wait()
        return True

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON metadata of `step` (default: the newest) without reading any array."""
        step = self._step(step)
        return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore(self, like: Any, step: int | None = None, shardings: Any = None,
                data: Any = None) -> tuple[int, Any, dict]:
        """Restores (step, state, meta) into the structure of `like`.

        Args:
          like: the live train state (arrays) or its abstract twin (ShapeDtypeStructs): gives structure, shapes,
            dtypes and, unless `shardings` is given, each leaf's target sharding.
          step: the step to restore; None = the newest. When the newest cannot be read (a damaged file), the
            next older intact step is restored instead, with a warning naming the failure.
          shardings: optional pytree of jax.sharding.Sharding matching `like`.
          data: an iterator to set to the saved position (meta["data"]).
        Raises FileNotFoundError when there is no checkpoint and LayoutMismatchError naming the first differing
        leaf when the checkpoint does not match `like`.
        """
        if step is not None:
            return self._restore_step(like, self._step(step), shardings, data)
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        first_error = None
        for s in steps:
            try:
                return self._restore_step(like, s, shardings, data)
            except LayoutMismatchError:
                raise  # another model/config: an older step would not match either
            except Exception as e:  # noqa: BLE001  (a damaged step: report it and try the one before)
                logging.warning("checkpoint step %d in %s cannot be read (%s: %s); trying an older step",
                                s, self.directory, type(e).__name__, e)
                first_error = first_error or e
        raise RuntimeError(f"no intact checkpoint in {self.directory} (steps {steps})") from first_error

    def _step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint step {step} in {self.directory} (have {self.all_steps()})")
        return step

    def _restore_step(self, like: Any, step: int, shardings: Any, data: Any) -> tuple[int, Any, dict]:
        where = os.path.join(self.directory, str(step))
        head = self._manager.restore(
            step, args=ocp.args.Composite(layout=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
        )
        check_layout(dict(head["layout"]), layout(like), where)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
        shard_leaves = [None] * len(leaves) if shardings is None else treedef.flatten_up_to(shardings)
        target = {}
        for (path, leaf), sharding in zip(leaves, shard_leaves):
            sharding = sharding if sharding is not None else getattr(leaf, "sharding", None)
            data_shape = _key_data_shape(leaf) if _is_key(leaf) else (np.shape(leaf), _plain_dtype(leaf))
            target[jax.tree_util.keystr(path)] = jax.ShapeDtypeStruct(data_shape[0], data_shape[1], sharding=sharding)
        flat = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        out = []
        for path, leaf in leaves:
            value = flat[jax.tree_util.keystr(path)]
            out.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)) if _is_key(leaf) else value)
        meta = dict(head["meta"])
        if data is not None:
            if "data" not in meta:
                raise ValueError(f"{where}: the checkpoint holds no data-iterator position (meta has no 'data')")
            data.set_state(meta["data"])
        return step, jax.tree_util.tree_unflatten(treedef, out), meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _plain_dtype(leaf: Any) -> Any:
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _key_data_shape(leaf: Any) -> tuple[tuple[int, ...], Any]:
    data = jax.eval_shape(jax.random.key_data, leaf)
    return data.shape, data.dtype


def _abstract_keys(tree: Any) -> Any:
    """`tree` with typed keys replaced by abstract key data (what flatten() stores), other leaves unchanged."""
    return jax.tree.map(lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x, tree)


__all__ = ["Checkpointer", "LayoutMismatchError", "check_layout", "flatten", "layout", "restore_params",
           "save_params"]
