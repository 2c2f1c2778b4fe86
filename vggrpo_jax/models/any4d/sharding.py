"""Activation sharding for Any4D: views and tokens spread over every device, including uneven splits.

Any4D's natural sizes rarely divide a mesh (21 views; N·T+1 = 18 649 tokens), and a batch of one clip cannot be split
at all. `parallel.constrain` leaves such dimensions replicated; here we instead ask GSPMD for an *uneven* split (it
pads the last shard), so all devices work on views / tokens. Mesh axes come from the shared logical-axis rules:
  per-view arrays (B·N, ...)   leading dim over the "batch" axes and the "length" axes together;
  token streams (B, L, ...)    B over the "batch" axes when it divides them, L over the rest ("length" plus any
                               batch axes B could not use).
Without a mesh (`jax.set_mesh` not active) these are identities.
"""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec

from vggrpo_jax.parallel import current_rules, logical_to_spec


def _axes(name: str, mesh) -> tuple[str, ...]:
    entry = logical_to_spec((name,), mesh, current_rules())[0]
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _size(axes: tuple[str, ...], mesh) -> int:
    n = 1
    for a in axes:
        n *= mesh.shape[a]
    return n


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else axes


def shard_views(x: jax.Array) -> jax.Array:
    """x (B·N, ...): per-view leading dim over all data-parallel and sequence axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = _axes("batch", mesh) + tuple(a for a in _axes("length", mesh) if a not in _axes("batch", mesh))
    return jax.lax.with_sharding_constraint(x, PartitionSpec(_entry(axes), *([None] * (x.ndim - 1))))


def shard_tokens(x: jax.Array) -> jax.Array:
    """x (B, L, ...): batch over the batch axes when divisible, tokens over the remaining axes (uneven allowed)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    batch_axes = _axes("batch", mesh)
    length_axes = tuple(a for a in _axes("length", mesh) if a not in batch_axes)
    if batch_axes and x.shape[0] % _size(batch_axes, mesh) == 0:
        spec = (_entry(batch_axes), _entry(length_axes))
    else:
        spec = (None, _entry(batch_axes + length_axes))
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec, *([None] * (x.ndim - 2))))
