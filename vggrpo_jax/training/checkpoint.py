"""Orbax checkpoints of resumable train states (`Checkpointer`); parameters-only checkpoints (`save_params` /
`restore_params`, from vggrpo_jax/checkpoint.py) are re-exported here.

A train-state checkpoint is one orbax CheckpointManager step holding three items:

    state    the train state's leaves as a flat {path: array} dict (paths are `jax.tree_util.keystr` strings, so the
             files read like the pytree: "['params']['dense']['kernel']")
    layout   {path: [shape, dtype]} of those leaves, written as JSON; checked before any array is read, so a
             checkpoint of another model or config fails with one error naming the first differing leaf
    meta     free JSON: the data-iterator position, the step counter of the job, anything the job needs to resume

Writes are atomic: orbax writes a step into a temporary directory and renames it when complete, so a crash or a
preemption mid-save leaves no step that a later run would load. A step damaged afterwards (a truncated, missing or
corrupt file: a full disk, a bad copy) is reported in one warning line naming it and its file, moved to
<directory>/damaged/<step> (kept for inspection, never deleted) and the restore takes the newest intact step; the
resumed run then writes that step number afresh. Typed PRNG keys are stored as their raw key data
and re-wrapped on restore. Restoring reads each array directly at its target sharding (the live leaf's sharding, or
an explicit `shardings` tree), so a state never has to fit on one device.
"""

from __future__ import annotations

import contextlib
import gc
import logging as stdlib_logging
import os
import re
import sys
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vggrpo_jax.checkpoint import restore_params, save_params
from vggrpo_jax.errors import UserError, first_line


class LayoutMismatchError(ValueError):
    """A checkpoint's leaves differ from the live train state's (names, shapes or dtypes), or it lacks what the
    restore asks for (a data-iterator position). Not damage: an older step of the same run would not match either."""


class CheckpointDamagedError(UserError, RuntimeError):
    """A checkpoint step cannot be read (a truncated, missing or corrupt file); the message names it."""


DAMAGED_DIR = "damaged"  # <checkpoints>/damaged/<step>: where unreadable steps are set aside


def describe_damage(err: BaseException, directory: str) -> str:
    """One line for a failed read: the innermost error's type and first message line (shortened), and the most
    specific path under `directory` that any error of the chain names (tensorstore buries it in its context)."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    paths = [m for e in chain for m in re.findall(re.escape(directory) + r"[^\s\"'\],):\\]*", str(e))]
    inner = chain[-1]
    text = f"{type(inner).__name__}: {first_line(inner)}"
    if len(text) > 160:
        text = text[:157] + "..."
    path = max(paths, key=len) if paths else None
    return text + (f"; file {path}" if path and path not in text else "")


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax reports a failed read with pages of logs and asyncio tracebacks (from its reader threads and from the
    coroutines left pending) before raising; the caller reports the failure in one line instead."""
    loggers = [stdlib_logging.getLogger(n) for n in ("absl", "orbax", "asyncio")]
    levels = [lg.level for lg in loggers]
    hooks = sys.unraisablehook, threading.excepthook
    for lg in loggers:
        lg.setLevel(stdlib_logging.CRITICAL)
    sys.unraisablehook = lambda *_: None
    threading.excepthook = lambda *_: None
    try:
        yield
    finally:
        gc.collect()  # the pending coroutines of a failed read report themselves when collected: do it while quiet
        sys.unraisablehook, threading.excepthook = hooks
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


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
        """The JSON metadata of `step` without reading any array. Default: the newest step whose metadata reads;
        newer ones that do not read are set aside as in `restore`."""
        def read(s: int) -> dict:
            return dict(self._manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

        if step is not None:
            return self._explicit(self._step(step), read)
        self._step(None)
        return self._newest_intact(read)

    def restore(self, like: Any, step: int | None = None, shardings: Any = None,
                data: Any = None) -> tuple[int, Any, dict]:
        """Restores (step, state, meta) into the structure of `like`.

        Args:
          like: the live train state (arrays) or its abstract twin (ShapeDtypeStructs): gives structure, shapes,
            dtypes and, unless `shardings` is given, each leaf's target sharding.
          step: the step to restore; None = the newest intact one: a step that cannot be read (a truncated,
            missing or corrupt file) is reported in one warning line, moved to <directory>/damaged/<step> (not
            deleted) and the next older step is tried. An explicit step that cannot be read raises
            CheckpointDamagedError (and stays in place).
          shardings: optional pytree of jax.sharding.Sharding matching `like`.
          data: an iterator to set to the saved position (meta["data"]).
        Raises FileNotFoundError when there is no checkpoint, LayoutMismatchError naming the first differing
        leaf when the checkpoint does not match `like`, CheckpointDamagedError when no step can be read.
        """
        if step is not None:
            return self._explicit(self._step(step), lambda s: self._restore_step(like, s, shardings, data))
        if not self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._newest_intact(lambda s: self._restore_step(like, s, shardings, data))

    def _newest_intact(self, read: Callable[[int], Any]) -> Any:
        """read(step) for the newest step it succeeds on; each step it fails on (not a layout mismatch) is reported
        in one warning line and moved to <directory>/damaged/<step> (kept for inspection, never deleted)."""
        damaged = []
        while True:
            steps = sorted(self._manager.all_steps(), reverse=True)
            if not steps:
                raise CheckpointDamagedError(
                    f"no intact checkpoint in {self.directory}: every step was damaged and set aside under "
                    f"{os.path.join(self.directory, DAMAGED_DIR)} (steps {damaged}); rerun to start from scratch")
            s = steps[0]
            try:
                with _quiet_orbax():
                    return read(s)
            except LayoutMismatchError:
                raise  # another model/config: an older step would not match either
            except Exception as e:  # noqa: BLE001  (a damaged step: set it aside and try the one before)
                moved = self._set_aside(s)
                damaged.append(s)
                logging.warning("checkpoint %s is damaged (%s); set aside as %s; trying an older step",
                                os.path.join(self.directory, str(s)), describe_damage(e, self.directory), moved)

    def _set_aside(self, step: int) -> str:
        """Moves step `step` to <directory>/damaged/<step> (or <step>.1, .2, … when that exists); returns the
        destination. Process 0 moves; every process then reloads the manager's step list."""
        src = os.path.join(self.directory, str(step))
        root = os.path.join(self.directory, DAMAGED_DIR)
        dst, n = os.path.join(root, str(step)), 0
        while os.path.exists(dst):
            n += 1
            dst = os.path.join(root, f"{step}.{n}")
        if jax.process_index() == 0:
            os.makedirs(root, exist_ok=True)
            os.replace(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
        self._manager.reload()
        return dst

    def _explicit(self, step: int, read: Callable[[int], Any]) -> Any:
        try:
            with _quiet_orbax():
                return read(step)
        except LayoutMismatchError:
            raise
        except Exception as e:  # noqa: BLE001  (an unreadable file: one line naming the step)
            raise CheckpointDamagedError(f"checkpoint {os.path.join(self.directory, str(step))} is damaged "
                                         f"({describe_damage(e, self.directory)})") from e

    def _step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint step {step} in {self.directory} (have {self.all_steps()})")
        return step

    def _restore_step(self, like: Any, step: int, shardings: Any, data: Any) -> tuple[int, Any, dict]:
        where = os.path.join(self.directory, str(step))
        if not os.path.isdir(os.path.join(where, "layout")):
            raise LayoutMismatchError(f"{where}: no 'layout' item: not a training.Checkpointer checkpoint (written by "
                                      "another tool or an older version of this code)")
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
                raise LayoutMismatchError(f"{where}: the checkpoint holds no data-iterator position (meta has no "
                                          "'data'): it was saved without one")
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


__all__ = ["CheckpointDamagedError", "Checkpointer", "DAMAGED_DIR", "LayoutMismatchError", "describe_damage", "check_layout", "flatten", "layout", "restore_params",
           "save_params"]
