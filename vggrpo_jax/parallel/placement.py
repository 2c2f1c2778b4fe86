"""Placing arrays and model states on a mesh by their logical annotations.

Usage pattern (never a full random init on one device):

    abstract = nnx.eval_shape(lambda: Model(cfg, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    shardings = abstract_state_shardings(abs_state, mesh)
    state = converter(..., shardings)            # each converted array device_put at its sharding
    model = nnx.merge(graphdef, state)

Inside jitted code, activations are annotated with `constrain(x, ("batch", "length", "act_embed"))`; it uses the
mesh set by `jax.set_mesh(mesh)` and is a no-op when no mesh is set (single-device tests, plain CPU runs).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vggrpo_jax.parallel.rules import DEFAULT_RULES, Rules, logical_to_spec, spec_is_divisible

_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("vggrpo_rules", default=DEFAULT_RULES)

# Metadata keys under which Flax versions store with_partitioning names.
_SHARDING_KEYS = ("out_sharding", "sharding_names", "sharding")


@contextlib.contextmanager
def use_rules(rules: Rules) -> Iterator[None]:
    """Sets the logical-axis rules used by `constrain` (and by default by the placement helpers)."""
    token = _RULES.set(tuple(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def current_rules() -> Rules:
    return _RULES.get()


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint by logical names, under the mesh of `jax.set_mesh`; identity without a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for shape {x.shape}")
    spec = logical_to_spec(logical_axes, mesh, current_rules(), shape=x.shape)
    return jax.lax.with_sharding_constraint(x, spec)


def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _logical_axes_of(variable: Any) -> tuple | None:
    meta = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
    for key in _SHARDING_KEYS:
        names = meta.get(key)
        if names is not None:
            return tuple(names)
    return None


def abstract_state_shardings(
    state: Any, mesh: Mesh, rules: Rules | None = None, strict: bool = False
) -> Any:
    """A pytree of NamedSharding matching `state` (an nnx.State, abstract or concrete).

    Variables without a logical annotation are replicated. With `strict`, a dimension that its mesh axes do not
    divide raises ValueError naming the variable instead of being replicated.
    """
    rules = current_rules() if rules is None else rules

    def one(path, variable):
        axes = _logical_axes_of(variable)
        shape = variable.get_value().shape if isinstance(variable, nnx.Variable) else variable.shape
        if axes is None:
            return NamedSharding(mesh, PartitionSpec())
        if len(axes) != len(shape):
            raise ValueError(f"{_path_name(path)}: logical axes {axes} do not match shape {shape}")
        if strict:
            loose = logical_to_spec(axes, mesh, rules)
            if not spec_is_divisible(loose, shape, mesh):
                raise ValueError(
                    f"{_path_name(path)}: shape {shape} is not divisible by mesh axes {loose} ({dict(mesh.shape)})"
                )
        return NamedSharding(mesh, logical_to_spec(axes, mesh, rules, shape=shape))

    return jax.tree_util.tree_map_with_path(
        lambda p, v: one(p, v), state, is_leaf=lambda v: isinstance(v, nnx.Variable)
    )


def put_global(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """jax.device_put(value, sharding) that also works when `sharding` spans several hosts and `value` is this host's
    full copy held on a local device (e.g. weights each host loaded itself): such an array is read back to host
    memory first, since the runtime does not move a local device's buffer to another host's devices."""
    if (isinstance(value, jax.Array) and value.is_fully_addressable and not sharding.is_fully_addressable):
        value = np.asarray(jax.device_get(value))
    return jax.device_put(value, sharding)


def place_state(state: Any, mesh: Mesh, rules: Rules | None = None, strict: bool = False) -> Any:
    """device_put every variable of `state` at the sharding its logical axes ask for (every host passes the same
    values on several hosts)."""
    shardings = abstract_state_shardings(state, mesh, rules, strict)

    def put(variable, sharding):
        return variable.replace(put_global(variable.get_value(), sharding))

    return jax.tree.map(put, state, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """device_put every leaf fully replicated on `mesh` (every host passes the same values on several hosts)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: put_global(x, sharding), tree)


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules | None = None) -> NamedSharding:
    """Sharding of an array whose leading dim is the batch ("batch" logical axis), the rest replicated."""
    rules = current_rules() if rules is None else rules
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), mesh, rules))


def shard_batch(batch: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Places a (globally identical, host-replicated) batch pytree with its leading dim split over the batch axes.

    Raises ValueError when the leading dim is not divisible by the number of batch shards.
    """

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        sharding = batch_sharding(mesh, x.ndim, rules)
        shards = 1
        for entry in sharding.spec[:1]:
            for a in (entry,) if isinstance(entry, str) else (entry or ()):
                shards *= mesh.shape[a]
        if x.shape[0] % shards:
            raise ValueError(f"shard_batch: leading dim {x.shape[0]} is not divisible by {shards} batch shards")
        return put_global(x, sharding)

    return jax.tree.map(put, batch)


def host_local_to_global(local_batch: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Assembles per-host batches (each host holds its own rows) into global arrays split over the batch axes.

    On one host this equals shard_batch. The global leading dim is the sum over hosts.
    """

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, rules), x)

    return jax.tree.map(put, local_batch)


def abstract_placed(state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """`state` (e.g. from nnx.eval_shape) with every leaf a ShapeDtypeStruct carrying its target sharding.

    What ahead-of-time compilation (`jax.jit(f).lower(...)`) needs to see per-device shapes without any weights.
    """
    shardings = abstract_state_shardings(state, mesh, rules)

    def one(variable, sharding):
        value = variable.get_value()
        return variable.replace(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding))

    return jax.tree.map(one, state, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))


def to_host(tree: Any) -> Any:
    """numpy copies of a pytree of arrays; an array sharded over several hosts is first gathered from all of them
    (jax.device_get alone fails on an array that is not fully addressable). Collective: call it on every host."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
