"""Device mesh, logical-axis rules and placement helpers (single- and multi-host)."""

from vggrpo_jax.parallel.mesh import MESH_AXES, initialize_distributed, make_mesh
from vggrpo_jax.parallel.rules import DEFAULT_RULES, logical_to_spec, logical_sharding
from vggrpo_jax.parallel.placement import (
    abstract_placed,
    abstract_state_shardings,
    batch_sharding,
    constrain,
    current_rules,
    host_local_to_global,
    place_state,
    replicate,
    shard_batch,
    to_host,
    use_rules,
)

__all__ = [
    "MESH_AXES",
    "DEFAULT_RULES",
    "initialize_distributed",
    "make_mesh",
    "logical_to_spec",
    "logical_sharding",
    "abstract_placed",
    "abstract_state_shardings",
    "batch_sharding",
    "constrain",
    "current_rules",
    "host_local_to_global",
    "place_state",
    "replicate",
    "shard_batch",
    "to_host",
    "use_rules",
]
