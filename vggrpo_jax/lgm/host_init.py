"""Fast host-side random initialisation (connectors; random toy teachers and VAEs).

Running Flax initialisers eagerly compiles each initialiser op separately (tens of seconds on CPU for a tiny Any4D),
and jitting them compiles one large RNG program, no faster. Parameters are instead drawn on the host from one numpy
generator by their role. At toy scale the teacher (Any4D) and the VAE may have random weights this way: the LGM then
learns to imitate a random teacher, which exercises every part of the construction. Rules by parameter name:

    kernel (linear)     N(0, 0.02²) (the ViT / timm init of transformer linears)
    kernel (conv)       N(0, 1/fan_in), fan_in = product of all but the last dim ((..., in, out))
    bias                0
    scale, gamma        1 (LayerNorm / RMSNorm scales, LayerScale)
    lora_a / lora_b     N(0, 1/rank) / 0 (an adapter that starts as the identity)
    cls_token, pos_embed, scale_token, ref_view_embed   N(0, 0.02²)
    any parameter whose dotted path ends with one of `zeros`   0  (e.g. zero-initialised output projections)

A parameter with any other name raises (no silent guess).

A random Any4D (`random_any4d`) also gets a forward-looking camera: its dense head's ray-z bias is RAY_Z_BIAS, so the
predicted rays point into the scene as a trained model's do. Without it ~85% of a random teacher's rays point
backwards, its z-depths are negative, the fitted intrinsics have negative focal lengths, and r_geo is −inf for
every clip (no view sees another's points), which leaves the agreement report's reward correlation undefined.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

_TOKENS = ("cls_token", "pos_embed", "scale_token", "mask_token", "register_tokens", "ref_view_embed")


def _value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name == "kernel" and len(shape) == 2:
        return 0.02 * rng.standard_normal(shape)  # transformer linears: the ViT/timm N(0, 0.02²)
    if name == "kernel":
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
    if name in ("bias", "lora_b"):
        return np.zeros(shape)
    if name in ("scale", "gamma"):
        return np.ones(shape)
    if name == "lora_a":
        return rng.standard_normal(shape) / shape[-1]
    if name in _TOKENS:
        return 0.02 * rng.standard_normal(shape)
    raise ValueError(f"random_init: no rule for a parameter named {name!r} (shape {shape})")


def random_init(factory: Callable[[], nnx.Module], seed: int, zeros: Sequence[str] = ()) -> nnx.Module:
    """`factory()`'s structure with random parameters drawn on the host (see module doc)."""
    graphdef, state = nnx.split(nnx.eval_shape(factory))
    rng = np.random.default_rng(seed)
    flat = []
    for path, var in nnx.to_flat_state(state):
        if not isinstance(var, nnx.Param):
            raise ValueError(f"random_init: {'.'.join(map(str, path))} is a {type(var).__name__}, not a parameter")
        abstract = var.get_value()
        dotted = ".".join(map(str, path))
        if any(dotted.endswith(z) for z in zeros):
            value = np.zeros(abstract.shape)
        else:
            value = _value(str(path[-1]), tuple(abstract.shape), rng)
        flat.append((path, var.replace(jnp.asarray(value, abstract.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


RAY_Z_BIAS = 5.0  # ≫ the ~1 spread of a random head's outputs: rays within ~20° of the optical axis


def random_any4d(config, seed: int):
    """A random Any4D teacher (toy runs and tests): `random_init` plus a forward-looking ray bias (module doc)."""
    from vggrpo_jax.models.any4d import Any4D  # noqa: PLC0415 (the init rules above serve any module)

    model = random_init(lambda: Any4D(config, nnx.Rngs(0)), seed)
    bias = model.dpt_regressor_head.conv2[2].bias  # dense channels: ray xyz, depth, confidence, …
    bias[...] = bias[...].at[2].set(RAY_Z_BIAS)
    return model


__all__ = ["RAY_Z_BIAS", "random_any4d", "random_init"]
