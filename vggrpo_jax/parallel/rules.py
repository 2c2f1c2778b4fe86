"""Logical axis names and the table that maps them onto mesh axes.

Models annotate parameters (nnx.with_partitioning) and activations (parallel.constrain) with *logical* names only.
Changing the parallelism means changing this table (or passing another one), never the model.

Logical names used across the project:
  batch       leading batch dim of activations            -> ("data", "fsdp")
  length      token / sequence dim of activations          -> "context"   (sequence parallelism for long videos)
  kv_length   key/value sequence dim (gathered for attention) -> None
  embed       model width of parameters                    -> "fsdp"      (FSDP: weights sharded, gathered per layer)
  act_embed   model width of activations                   -> None
  mlp         FFN hidden dim                               -> "tensor"
  heads       attention heads (q/k/v/o projections)        -> "tensor"
  kv          per-head dim                                 -> None
  layers      stacked (scanned) layer dim                  -> None
  vocab       vocabulary                                   -> "tensor"
  conv_in / conv_out   conv channels (VAE, patch embed)    -> None / "tensor"
  lora_rank   LoRA rank                                    -> None
  views       geometry views (Any4D)                       -> None
  norm        norm scales and biases                       -> None
"""

from __future__ import annotations

from typing import Sequence

from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", "context"),
    ("kv_length", None),
    ("embed", "fsdp"),
    ("act_embed", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("lora_rank", None),
    ("views", None),
    ("norm", None),
)


def _lookup(name: str, rules: Rules) -> str | tuple[str, ...] | None:
    for logical, physical in rules:
        if logical == name:
            return physical
    raise KeyError(f"logical axis {name!r} has no rule; known: {[r[0] for r in rules]}")


def logical_to_spec(
    logical_axes: Sequence[str | None] | PartitionSpec,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps logical names to a PartitionSpec on `mesh`.

    Mesh axes of size 1 or absent from the mesh are dropped; a mesh axis is used at most once per array. When `shape`
    is given, a dimension that the mapped mesh axes do not divide is left replicated (tiny test configs, odd head
    counts); `placement.place_state(..., strict=True)` turns that into an error instead.
    """
    used: set[str] = set()
    out: list[str | tuple[str, ...] | None] = []
    for dim, name in enumerate(tuple(logical_axes)):
        if name is None:
            out.append(None)
            continue
        if isinstance(name, tuple):  # already physical (a PartitionSpec entry with several axes)
            physical = name
        else:
            physical = _lookup(name, rules)
        axes = (physical,) if isinstance(physical, str) else tuple(physical or ())
        axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
        if shape is not None and axes:
            size = 1
            for a in axes:
                size *= mesh.shape[a]
            if shape[dim] % size:
                axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def logical_sharding(
    logical_axes: Sequence[str | None], mesh: Mesh, rules: Rules = DEFAULT_RULES, shape: Sequence[int] | None = None
) -> NamedSharding:
    """NamedSharding for an array with the given logical axes (see logical_to_spec)."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, mesh, rules, shape))


def spec_is_divisible(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> bool:
    for dim, entry in enumerate(spec):
        if entry is None:
            continue
        axes = (entry,) if isinstance(entry, str) else entry
        size = 1
        for a in axes:
            size *= mesh.shape[a]
        if shape[dim] % size:
            return False
    return True


__all__ = ["DEFAULT_RULES", "Rules", "logical_to_spec", "logical_sharding", "spec_is_divisible"]
