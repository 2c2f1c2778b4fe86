"""The device mesh: axes ("data", "fsdp", "context", "tensor"), built from config on one host or many."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.experimental.mesh_utils
import numpy as np
from jax.sharding import Mesh

from vggrpo_jax.errors import ConfigError

# Order matters: the last axes are the fastest-varying over devices, so "tensor" (most communication) stays within
# the closest devices, and "data" (least communication) spans hosts.
MESH_AXES = ("data", "fsdp", "context", "tensor")


def _get(cfg: Any, key: str, default: int) -> int:
    if isinstance(cfg, Mapping):
        return int(cfg.get(key, default))
    return int(getattr(cfg, key, default))


def mesh_shape(mesh_config: Any, num_devices: int) -> dict[str, int]:
    """Resolves axis sizes; exactly one axis may be -1 (it takes whatever devices remain).

    Raises ValueError naming the axes when the sizes do not multiply to the device count.
    """
    sizes = {axis: _get(mesh_config, axis, 1) for axis in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got {free}")
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{axis} must be a positive size or -1, got {size}")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if num_devices % fixed:
            raise ConfigError(
                f"mesh: {num_devices} devices are not divisible by the fixed axes {sizes} (product {fixed})"
            )
        sizes[free[0]] = num_devices // fixed
    total = int(np.prod(list(sizes.values())))
    if total != num_devices:
        raise ConfigError(f"mesh: axis sizes {sizes} use {total} devices but {num_devices} are available")
    return sizes


def make_mesh(mesh_config: Any = None, devices: list | None = None) -> Mesh:
    """Builds a Mesh over all (global) devices with axes MESH_AXES.

    `mesh_config` is a ConfigDict/dict/object with integer fields data, fsdp, context, tensor (missing = 1, one may be
    -1). With no config, every device goes to "fsdp" (pure FSDP, the configs' default).
    """
    devices = list(jax.devices() if devices is None else devices)
    if mesh_config is None:
        mesh_config = {"fsdp": -1}
    sizes = mesh_shape(mesh_config, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # noqa: BLE001 - topology-aware placement is best effort (CPU and odd slices); order is still valid.
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def initialize_distributed(dist_config: Any = None) -> None:
    """Joins a multi-host job through jax.distributed when configured; a no-op for single-process runs.

    `dist_config` fields: coordinator_address ("host:port"), num_processes, process_id. On TPU pods and SLURM these may
    be left empty and JAX discovers them itself when `auto` is true.
    """
    if dist_config is None:
        return
    get = (lambda k, d=None: dist_config.get(k, d)) if isinstance(dist_config, Mapping) else (
        lambda k, d=None: getattr(dist_config, k, d))
    if get("auto", False):
        jax.distributed.initialize()
        return
    address = get("coordinator_address", "") or ""
    if not address:
        return
    num_processes = get("num_processes", None)
    process_id = get("process_id", None)
    if num_processes is None or process_id is None or int(num_processes) < 1:
        raise ConfigError("distributed: coordinator_address is set, so num_processes and process_id are required")
    if not 0 <= int(process_id) < int(num_processes):
        raise ConfigError(f"distributed.process_id={process_id} must be in [0, distributed.num_processes={num_processes})")
    jax.distributed.initialize(
        coordinator_address=address, num_processes=int(num_processes), process_id=int(process_id)
    )
