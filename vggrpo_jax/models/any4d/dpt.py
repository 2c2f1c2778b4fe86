"""DPT dense head (uniception DPTFeature + DPTRegressionProcessor), channels-last, always fp32.

Hooks: four feature maps at patch resolution (h, w): [fused encoder features, trunk tap 1, trunk tap 2, final trunk].
Each goes through input_process[i] = 1×1 conv to layer_dims[i], then resampling (ConvTranspose k4 s4 → 4h, k2 s2 → 2h,
identity → h, 3×3 conv s2 → ⌈h/2⌉), then scratch.layer{i+1}_rn (3×3, no bias) to feature_dim. RefineNet fusion from
coarse to fine, each ×2 bilinear (align_corners=True) → 8h × 8w; the regressor: conv1 3×3 → bilinear to (H, W) →
conv2 = [3×3, ReLU, 1×1] to the output channels.
Parameter names mirror the checkpoint (input_process.i.0.j for the act_postprocess layers, scratch.layerK_rn,
scratch.refinenetK.{resConfUnit1, resConfUnit2, out_conv}, conv1, conv2.0, conv2.2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.any4d.resample import resize_bilinear


def conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, bias: bool = True, *, rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)), use_bias=bias,
                    kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                                      (None, None, "conv_in", "conv_out")),
                    rngs=rngs)


class PatchConvTranspose(nnx.Module):
    """ConvTranspose with kernel = stride and no padding: each input pixel becomes a k×k output patch.

    kernel (k, k, in, out) holds PyTorch's (in, out, k, k) weight transposed, NOT flipped: out[h·k+i, w·k+j] =
    x[h, w] · kernel[i, j] + bias.
    """

    def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs):
        self.k = k
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (k, k, cin, cout), jnp.float32),
                                out_sharding=(None, None, "conv_in", "conv_out"))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32), out_sharding=("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        v, h, w, _ = x.shape
        y = jnp.einsum("vhwc,ijco->vhiwjo", x, self.kernel[...])
        return y.reshape(v, h * self.k, w * self.k, -1) + self.bias[...]


class ResidualConvUnit(nnx.Module):
    def __init__(self, features: int, *, rngs: nnx.Rngs):
        self.conv1 = conv(features, features, 3, pad=1, rngs=rngs)
        self.conv2 = conv(features, features, 3, pad=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


class FusionBlock(nnx.Module):
    def __init__(self, features: int, with_skip: bool, *, rngs: nnx.Rngs):
        self.resConfUnit1 = ResidualConvUnit(features, rngs=rngs) if with_skip else None
        self.resConfUnit2 = ResidualConvUnit(features, rngs=rngs)
        self.out_conv = conv(features, features, 1, rngs=rngs)

    def __call__(self, x: jax.Array, skip: jax.Array | None = None) -> jax.Array:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]))
        return self.out_conv(x)


class Scratch(nnx.Module):
    def __init__(self, layer_dims, features: int, *, rngs: nnx.Rngs):
        for i, d in enumerate(layer_dims):
            setattr(self, f"layer{i + 1}_rn", conv(d, features, 3, pad=1, bias=False, rngs=rngs))
        for i in range(4):
            setattr(self, f"refinenet{i + 1}", FusionBlock(features, with_skip=i < 3, rngs=rngs))


class DPTFeature(nnx.Module):
    def __init__(self, input_dims, layer_dims, features: int, *, rngs: nnx.Rngs):
        l0, l1, l2, l3 = layer_dims
        self.input_process = nnx.List([
            nnx.List([nnx.List([conv(input_dims[0], l0, 1, rngs=rngs), PatchConvTranspose(l0, l0, 4, rngs=rngs)])]),
            nnx.List([nnx.List([conv(input_dims[1], l1, 1, rngs=rngs), PatchConvTranspose(l1, l1, 2, rngs=rngs)])]),
            nnx.List([nnx.List([conv(input_dims[2], l2, 1, rngs=rngs)])]),
            nnx.List([nnx.List([conv(input_dims[3], l3, 1, rngs=rngs), conv(l3, l3, 3, stride=2, pad=1, rngs=rngs)])]),
        ])
        self.scratch = Scratch(layer_dims, features, rngs=rngs)

    def __call__(self, hooks: list[jax.Array]) -> jax.Array:
        """hooks: 4 maps (V, h, w, C_i) → fused features (V, 8h, 8w, feature_dim)."""
        layers = []
        for i, x in enumerate(hooks):
            for layer in self.input_process[i][0]:
                x = layer(x)
            layers.append(getattr(self.scratch, f"layer{i + 1}_rn")(x))
        h, w = layers[2].shape[1:3]
        path = self.scratch.refinenet4(layers[3])[:, :h, :w]
        path = self.scratch.refinenet3(path, layers[2])
        path = self.scratch.refinenet2(path, layers[1])
        return self.scratch.refinenet1(path, layers[0])


class DPTRegressor(nnx.Module):
    def __init__(self, features: int, out_channels: int, *, rngs: nnx.Rngs):
        hidden = features // 2
        self.conv1 = conv(features, hidden, 3, pad=1, rngs=rngs)
        self.conv2 = nnx.List([conv(hidden, hidden, 3, pad=1, rngs=rngs), None,  # [1] is the ReLU
                               conv(hidden, out_channels, 1, rngs=rngs)])

    def __call__(self, x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """(V, 8h, 8w, F) → (V, H, W, out_channels)."""
        x = resize_bilinear(self.conv1(x), out_hw)
        return self.conv2[2](jax.nn.relu(self.conv2[0](x)))
