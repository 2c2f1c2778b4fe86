"""Ahead-of-time compilation of WanVAE encode/decode on abstract shapes (no weights, no data), for memory and FLOP
figures of full-size videos on a (simulated) device mesh.

Sharding: parameters follow their logical axes (parallel.rules); the video/latents are split over batch ("data",
"fsdp") and over width ("context", via the "length" logical axis that the VAE's activation constraints use).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from vggrpo_jax.models.wan.vae import WanVAE, WanVAEConfig
from vggrpo_jax.parallel import abstract_state_shardings, logical_to_spec

_IO_AXES = ("batch", None, None, None, "length")  # (B, C, F, H, W)


@dataclasses.dataclass
class CompiledFigures:
    name: str
    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    flops: float  # XLA's count for the compiled program: a lax.scan body is counted once

    def line(self) -> str:
        gib = 2.0**30
        return (
            f"{self.name}: per device temp {self.temp_bytes / gib:.3f} GiB, args {self.argument_bytes / gib:.3f} GiB, "
            f"out {self.output_bytes / gib:.3f} GiB, XLA flops {self.flops:.3e}"
        )


def _abstract_state(config: WanVAEConfig, mesh: Mesh) -> tuple[nnx.GraphDef, Any]:
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0))))
    shardings = abstract_state_shardings(state, mesh)

    def one(var, sharding):
        v = var.get_value()
        return var.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding))

    return graphdef, jax.tree.map(one, state, shardings, is_leaf=lambda v: isinstance(v, nnx.Variable))


def compile_vae(
    config: WanVAEConfig, mesh: Mesh, batch: int, num_frames: int, height: int, width: int, what: str
) -> CompiledFigures:
    """Compiles `what` ("encode" or "decode") for a (batch, 3, num_frames, height, width) video on `mesh`."""
    graphdef, state = _abstract_state(config, mesh)
    s = config.spatial_stride
    if what == "encode":
        shape = (batch, config.image_channels, num_frames, height, width)
        fn = lambda st, x: nnx.merge(graphdef, st).encode(x)  # noqa: E731
    elif what == "decode":
        shape = (batch, config.z_dim, config.num_latent_frames(num_frames), height // s, width // s)
        fn = lambda st, z: nnx.merge(graphdef, st).decode(z)  # noqa: E731
    else:
        raise ValueError(f"compile_vae: what must be 'encode' or 'decode', got {what!r}")
    sharding = NamedSharding(mesh, logical_to_spec(_IO_AXES, mesh, shape=shape))
    arg = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
    with jax.set_mesh(mesh):
        compiled = jax.jit(fn).lower(state, arg).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return CompiledFigures(
        f"{what} {shape} on {dict(mesh.shape)}",
        int(mem.temp_size_in_bytes),
        int(mem.argument_size_in_bytes),
        int(mem.output_size_in_bytes),
        float(cost.get("flops", 0.0)),
    )
