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

import functools

import jax
import jax.numpy as jnp
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


def global_attention(q: jax.Array, k: jax.Array, v: jax.Array, kind: str = "blocked", block: int = 512) -> jax.Array:
    """Attention over the global blocks' N·T+1 tokens, (B, L, H, Dh) in and out.

    kind "blocked": the flash-style kernel of `models.wan.attention` (online softmax over key tiles, memory O(L·tile)
    instead of the (H, L, L) logits: 12 × 18 649² floats = 16.7 GB at 21 views × 336×518). Under a mesh it runs in
    shard_map with the queries split like `shard_tokens` (padded up to whole per-device shares, padding sliced off)
    and keys / values gathered, so the uneven 18 649 tokens still spread over every device.
    kind "xla": softmax over materialised logits; "cudnn": the fused GPU kernel (bf16 / fp16 inputs).
    """
    from vggrpo_jax.models.wan.attention import blocked_attention, cudnn_attention, xla_attention  # noqa: PLC0415

    if kind == "xla":
        return xla_attention(q, k, v)
    if kind == "cudnn":
        return cudnn_attention(q, k, v)
    if kind != "blocked":
        raise ValueError(f"Any4D global attention must be 'blocked', 'xla' or 'cudnn', got {kind!r}")
    kernel = functools.partial(blocked_attention, block_q=block, block_kv=block)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(q, k, v)
    batch_axes = _axes("batch", mesh)
    length_axes = tuple(a for a in _axes("length", mesh) if a not in batch_axes)
    if batch_axes and q.shape[0] % _size(batch_axes, mesh) == 0:
        b_axes, l_axes = batch_axes, length_axes
    else:
        b_axes, l_axes = (), batch_axes + length_axes
    length = q.shape[1]
    share = -(-length // _size(l_axes, mesh))
    padded = share * _size(l_axes, mesh)
    if padded != length:  # padded queries attend like any other and are dropped afterwards
        q = jnp.pad(q, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
    q_spec = PartitionSpec(_entry(b_axes), _entry(l_axes), None, None)
    kv_spec = PartitionSpec(_entry(b_axes), None, None, None)
    out = jax.shard_map(kernel, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                        check_vma=False)(q, k, v)
    return out[:, :length]
