"""LoRA: trainable low-rank deltas over frozen kernels, switchable off to evaluate the reference policy.

`LoRALinear` is a drop-in for `nnx.Linear`: the base parameters keep the names `kernel` (in, out) and `bias`, so
checkpoint converters do not change, and with `rank=0` it *is* a plain linear layer. With `rank > 0` it adds

    y = x @ kernel + bias + (alpha / rank) · (x @ lora_a) @ lora_b

where `lora_a` (in, r) is Gaussian-initialised and `lora_b` (r, out) starts at zero, so a fresh adapter leaves the
model unchanged. Adapter weights are `LoRAParam` variables (fp32 by default) so that

    trainable = nnx.state(model, LoRAParam)       # the optimizer sees only these
    graphdef, lora, frozen = nnx.split(model, LoRAParam, ...)

Switching adapters off (`with lora_disabled(model): ...`) evaluates the base model with the same weights in memory:
Flow-GRPO's KL term needs μ_ref from the reference policy, and keeping a second copy of a 14B model is not an option.
The switch is a Python attribute read at trace time, so inside one jitted function the policy and the reference are
two traced calls of the same parameters.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class LoRAParam(nnx.Param):
    """A trainable LoRA adapter weight (distinct from the frozen base `nnx.Param`s)."""


class LoRALinear(nnx.Module):
    """nnx.Linear with an optional LoRA adapter.

    Args:
      in_features, out_features: sizes of the last input / output dim.
      rank: adapter rank; 0 means no adapter.
      alpha: LoRA alpha; the delta is scaled by alpha / rank (default alpha = rank).
      kernel_axes: logical axis names of the kernel (in, out), e.g. ("embed", "heads").
      dtype: computation dtype of the base matmul (None: from inputs/params); the adapter matmuls follow it too.
      param_dtype: dtype of the base kernel/bias; `lora_dtype` of the adapter (fp32 by default: optimizer precision).
      lora_init_std: std of lora_a's Gaussian init (default 1/rank).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        rank: int = 0,
        alpha: float | None = None,
        kernel_axes: tuple[str | None, str | None] = (None, None),
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        lora_dtype: Any = jnp.float32,
        lora_init_std: float | None = None,
        kernel_init: nnx.Initializer = nnx.initializers.lecun_normal(),
        rngs: nnx.Rngs,
    ):
        self.in_features, self.out_features = in_features, out_features
        self.dtype = dtype
        key = rngs.params()
        self.kernel = nnx.Param(
            kernel_init(key, (in_features, out_features), param_dtype), out_sharding=tuple(kernel_axes)
        )
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), param_dtype), out_sharding=(kernel_axes[1],)) if use_bias else None
        )
        self.rank = int(rank)
        self.lora_enabled = True
        if self.rank > 0:
            self.scale = float(alpha if alpha is not None else rank) / self.rank
            std = lora_init_std if lora_init_std is not None else 1.0 / self.rank
            self.lora_a = LoRAParam(
                std * jax.random.normal(rngs.params(), (in_features, self.rank), lora_dtype),
                out_sharding=(kernel_axes[0], "lora_rank"),
            )
            self.lora_b = LoRAParam(
                jnp.zeros((self.rank, out_features), lora_dtype), out_sharding=("lora_rank", kernel_axes[1])
            )
        else:
            self.scale = 0.0
            self.lora_a = None
            self.lora_b = None

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        y = jnp.dot(x, self.kernel[...].astype(dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        if self.rank > 0 and self.lora_enabled:
            down = jnp.dot(x, self.lora_a[...].astype(dtype))
            y = y + (self.scale * jnp.dot(down, self.lora_b[...].astype(dtype))).astype(y.dtype)
        return y


def lora_modules(model: nnx.Module) -> list[LoRALinear]:
    """All LoRALinear layers of `model` that carry an adapter."""
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, LoRALinear) and m.rank > 0]


@contextlib.contextmanager
def lora_disabled(model: nnx.Module) -> Iterator[nnx.Module]:
    """Within the block, every adapter of `model` is off: the model computes the base (reference) function."""
    mods = lora_modules(model)
    before = [m.lora_enabled for m in mods]
    for m in mods:
        m.lora_enabled = False
    try:
        yield model
    finally:
        for m, b in zip(mods, before):
            m.lora_enabled = b


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its base kernel in place (for export) and zeroes lora_b.

    Works for scanned stacks too: the leading (layer) dims of kernel, lora_a and lora_b broadcast.
    """
    for m in lora_modules(model):
        a = m.lora_a[...].astype(jnp.float32)
        b = m.lora_b[...].astype(jnp.float32)
        delta = m.scale * jnp.einsum("...ir,...ro->...io", a, b)
        kernel = m.kernel[...]
        m.kernel[...] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
        m.lora_b[...] = jnp.zeros_like(m.lora_b[...])
    return model


def matches_targets(name: str, targets: Sequence[str]) -> bool:
    """True when a module path like 'blocks.attn1.to_q' matches any target regex (searched, not anchored)."""
    return any(re.search(t, name) for t in targets)
