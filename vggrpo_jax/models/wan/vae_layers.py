"""Building blocks of the Wan VAE, channels-last (B, T, H, W, C), with explicit causal caches.

Every block is called as `y, new_cache = block(x, cache)` on one temporal *chunk*. `cache=None` means "first chunk":
causal convs pad with zeros, temporal down/up-samplers take their first-chunk paths (no time conv), and the block
returns a cache whose shapes no longer change (each causal conv keeps the last CACHE_T = 2 input frames, each
temporal downsampler the last frame). Feeding the same stream chunk by chunk therefore gives exactly the result of
diffusers' AutoencoderKLWan (which uses the same chunk schedule), and a steady cache can be carried through lax.scan.

Parameter names follow diffusers' keys (conv1, norm1, conv_shortcut, resample, time_conv, to_qkv, ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

CACHE_T = 2

Cache = Any  # nested dicts / tuples of arrays, or None for "first chunk"


def _sub(cache: Cache, key: Any) -> Cache:
    return None if cache is None else cache[key]


def _param(rngs: nnx.Rngs, init, shape, dtype, names) -> nnx.Param:
    return nnx.Param(nnx.with_partitioning(init, names)(rngs.params(), shape, dtype))


class CausalConv3d(nnx.Module):
    """Conv3d, causal in time (2·p_t frames padded before, from the cache), symmetric zero padding in space.

    kernel: (kt, kh, kw, in, out); bias: (out,).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel: tuple[int, int, int],
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel = _param(
            rngs, nnx.initializers.lecun_normal(), (*kernel, in_dim, out_dim), param_dtype,
            (None, None, None, "conv_in", "conv_out"),
        )  # fmt: skip
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (out_dim,), param_dtype, ("conv_out",))
        self.stride = tuple(stride)
        self.time_pad = 2 * padding[0]
        self.spatial_pad = (padding[1], padding[2])
        self.dtype = dtype
        if self.time_pad not in (0, CACHE_T):
            raise ValueError(f"CausalConv3d: temporal padding {padding[0]} does not fit the {CACHE_T}-frame cache")

    def conv(self, x: jax.Array) -> jax.Array:
        """The plain convolution, VALID in time (callers provide the causal context).

        Computed as a sum over the kt temporal taps of per-frame 2D convolutions (or matmuls for 1×1 kernels):
        XLA:CPU runs this ~3× faster than a native 3D convolution, and it is the same arithmetic.
        """
        kernel = self.kernel.get_value().astype(self.dtype)
        x = x.astype(self.dtype)
        kt, kh, kw = kernel.shape[:3]
        st = self.stride[0]
        b, t, h, w, c = x.shape
        t_out = (t - kt) // st + 1
        if t_out < 1:
            raise ValueError(f"CausalConv3d: {t} frames are fewer than the temporal kernel {kt}")
        ph, pw = self.spatial_pad
        y = None
        for i in range(kt):
            xi = jax.lax.slice_in_dim(x, i, i + st * (t_out - 1) + 1, stride=st, axis=1)
            if kh == kw == 1 and ph == pw == 0:
                yi = jnp.einsum("bthwc,co->bthwo", xi, kernel[i, 0, 0])
            else:
                yi = jax.lax.conv_general_dilated(
                    xi.reshape(b * t_out, h, w, c), kernel[i], window_strides=self.stride[1:],
                    padding=((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )  # fmt: skip
                yi = yi.reshape(b, t_out, *yi.shape[1:])
            y = yi if y is None else y + yi
        return y + self.bias.get_value().astype(self.dtype)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        if self.time_pad == 0:
            return self.conv(x), None
        if cache is None:
            cache = jnp.zeros((x.shape[0], self.time_pad, *x.shape[2:]), x.dtype)
        x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
        return self.conv(x), x[:, -CACHE_T:]


class Conv2d(nnx.Module):
    """Per-frame 2D convolution on (B, T, H, W, C); kernel (kh, kw, in, out)."""

    def __init__(
        self, in_dim: int, out_dim: int, kernel: int, *, stride: int = 1, padding=((0, 0), (0, 0)),
        dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):  # fmt: skip
        self.kernel = _param(
            rngs, nnx.initializers.lecun_normal(), (kernel, kernel, in_dim, out_dim), param_dtype,
            (None, None, "conv_in", "conv_out"),
        )  # fmt: skip
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (out_dim,), param_dtype, ("conv_out",))
        self.stride = stride
        self.padding = tuple(tuple(p) for p in padding)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.get_value().astype(self.dtype)
        x = x.astype(self.dtype)
        if kernel.shape[:2] == (1, 1) and self.stride == 1 and self.padding == ((0, 0), (0, 0)):
            return jnp.einsum("bthwc,co->bthwo", x, kernel[0, 0]) + self.bias.get_value().astype(self.dtype)
        b, t = x.shape[:2]
        y = jax.lax.conv_general_dilated(
            x.reshape(b * t, *x.shape[2:]),
            kernel,
            window_strides=(self.stride, self.stride),
            padding=self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        y = y + self.bias.get_value().astype(self.dtype)
        return y.reshape(b, t, *y.shape[1:])


class RMSNorm(nnx.Module):
    """x / max(‖x‖₂, 1e-12) · √C · gamma over channels, in fp32 (diffusers' WanRMS_norm, no bias)."""

    def __init__(self, dim: int, *, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.gamma = _param(rngs, nnx.initializers.ones_init(), (dim,), param_dtype, ("norm",))
        self.scale = dim**0.5

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
        y = xf / jnp.maximum(norm, 1e-12) * self.scale * self.gamma.get_value().astype(jnp.float32)
        return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
    """norm1 → SiLU → conv1 (3³ causal) → norm2 → SiLU → conv2, plus conv_shortcut (1³) when channels change."""

    def __init__(self, in_dim: int, out_dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = RMSNorm(in_dim, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = CausalConv3d(in_dim, out_dim, (3, 3, 3), padding=(1, 1, 1), **kw)
        self.norm2 = RMSNorm(out_dim, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = CausalConv3d(out_dim, out_dim, (3, 3, 3), padding=(1, 1, 1), **kw)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, (1, 1, 1), **kw) if in_dim != out_dim else None

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
        y, c1 = self.conv1(jax.nn.silu(self.norm1(x)), _sub(cache, "conv1"))
        y, c2 = self.conv2(jax.nn.silu(self.norm2(y)), _sub(cache, "conv2"))
        return y + h, {"conv1": c1, "conv2": c2}


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the H·W positions of each frame (no cache: frames are independent)."""

    def __init__(self, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = RMSNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.to_qkv = Conv2d(dim, 3 * dim, 1, **kw)
        self.proj = Conv2d(dim, dim, 1, **kw)
        self.dim = dim

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        logits = jnp.einsum("nqc,nkc->nqk", q, k).astype(jnp.float32) * (c**-0.5)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = jnp.einsum("nqk,nkc->nqc", attn, v).reshape(b, t, h, w, c)
        return x + self.proj(y)


class MidBlock(nnx.Module):
    """resnets[0] → attentions[0] → resnets[1]."""

    def __init__(self, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
        self.attentions = nnx.List([AttentionBlock(dim, **kw)])

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c0 = self.resnets[0](x, _sub(cache, 0))
        x = self.attentions[0](x)
        x, c1 = self.resnets[1](x, _sub(cache, 1))
        return x, (c0, c1)


class Resample(nnx.Module):
    """Spatial 2× up/down-sampling per frame, with an optional causal temporal 2× stage.

    upsample2d/3d: nearest 2× → conv 3×3 (to `upsample_out_dim`); 3d first runs time_conv (dim → 2·dim channels,
      split into two consecutive frames), except on the first chunk, where the single frame passes unchanged.
    downsample2d/3d: zero-pad right/bottom → conv 3×3 stride 2; 3d then runs time_conv (3 frames, stride 2) over
      [last frame of the previous chunk, this chunk], except on the first chunk, which passes unchanged.
    """

    def __init__(
        self, dim: int, mode: str, upsample_out_dim: int | None = None, *, dtype=jnp.float32,
        param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):  # fmt: skip
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            out = dim // 2 if upsample_out_dim is None else upsample_out_dim
            self.resample = Conv2d(dim, out, 3, padding=((1, 1), (1, 1)), **kw)
            self.time_conv = (
                CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **kw) if mode == "upsample3d" else None
            )
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), **kw)
            self.time_conv = (
                CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw) if mode == "downsample3d" else None
            )
        else:
            raise ValueError(f"Resample: unknown mode {mode!r}")

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        new_cache = None
        if self.mode == "upsample3d":
            if cache is None:  # diffusers' "Rep": the first frame is not doubled in time; later chunks see zeros
                new_cache = jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype)
            else:
                y, new_cache = self.time_conv(x, cache)
                b, t, h, w, _ = y.shape
                # channels [j·C, (j+1)·C) become frame 2t + j
                x = y.reshape(b, t, h, w, 2, -1).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, -1)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest-exact at an integer factor
        x = self.resample(x)
        if self.mode == "downsample3d":
            if cache is None:
                new_cache = x[:, -1:]
            else:
                new_cache = x[:, -1:]
                x = self.time_conv.conv(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
        return x, new_cache


# ----------------------------------------------------------------------------------------- Wan2.2 shortcuts
def avg_down(x: jax.Array, out_dim: int, factor_t: int, factor_s: int) -> jax.Array:
    """diffusers' AvgDown3D (channels-last): space/time-to-channel, then mean over channel groups.

    The chunk is zero-padded at the front to a multiple of factor_t (the 1-frame first chunk).
    """
    b, t, h, w, c = x.shape
    pad_t = (factor_t - t % factor_t) % factor_t
    if pad_t:
        x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
        t += pad_t
    x = x.reshape(b, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
    # channel order (c, ft, fs_h, fs_w), as in the reference's permute
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t // factor_t, h // factor_s, w // factor_s, -1)
    group = x.shape[-1] // out_dim
    return x.reshape(*x.shape[:-1], out_dim, group).mean(axis=-1)


def dup_up(x: jax.Array, out_dim: int, factor_t: int, factor_s: int, first_chunk: bool) -> jax.Array:
    """diffusers' DupUp3D (channels-last): repeat channels, then channel-to-space/time; the first chunk keeps only
    the last of its factor_t frames."""
    b, t, h, w, c = x.shape
    repeats = out_dim * factor_t * factor_s * factor_s // c
    x = jnp.repeat(x, repeats, axis=-1).reshape(b, t, h, w, out_dim, factor_t, factor_s, factor_s)
    x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * factor_t, h * factor_s, w * factor_s, out_dim)
    return x[:, factor_t - 1 :] if first_chunk else x


class ResidualDownBlock(nnx.Module):
    """Wan2.2 encoder stage: resnets (+ downsampler) plus the parameter-free avg_down shortcut of the stage input."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, temperal_downsample: bool, down_flag: bool, *,
        dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):  # fmt: skip
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.out_dim = out_dim
        self.factor_t = 2 if temperal_downsample else 1
        self.factor_s = 2 if down_flag else 1
        if in_dim * self.factor_t * self.factor_s**2 % out_dim:
            raise ValueError(f"ResidualDownBlock: {in_dim} channels × factor cannot average into {out_dim}")
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nnx.List([ResidualBlock(a, b, **kw) for a, b in zip(dims[:-1], dims[1:])])
        mode = "downsample3d" if temperal_downsample else "downsample2d"
        self.downsampler = Resample(out_dim, mode, **kw) if down_flag else None

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        shortcut = avg_down(x, self.out_dim, self.factor_t, self.factor_s)
        caches = []
        for i, resnet in enumerate(self.resnets):
            x, c = resnet(x, _sub(_sub(cache, "resnets"), i))
            caches.append(c)
        new_cache: dict[str, Cache] = {"resnets": tuple(caches)}
        if self.downsampler is not None:
            x, new_cache["downsampler"] = self.downsampler(x, _sub(cache, "downsampler"))
        return x + shortcut, new_cache


class UpBlock(nnx.Module):
    """Decoder stage: num_res_blocks + 1 resnets, then an optional Resample (Wan2.1: `upsamplers[0]`; Wan2.2:
    `upsampler` plus the parameter-free dup_up shortcut of the stage input)."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, upsample_mode: str | None, residual: bool, *,
        dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):  # fmt: skip
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nnx.List([ResidualBlock(a, b, **kw) for a, b in zip(dims[:-1], dims[1:])])
        self.residual = residual
        self.in_dim, self.out_dim = in_dim, out_dim
        self.factor_t = 2 if upsample_mode == "upsample3d" else 1
        if residual:
            up = Resample(out_dim, upsample_mode, upsample_out_dim=out_dim, **kw) if upsample_mode else None
            self.upsampler = up
        else:
            self.upsamplers = nnx.List([Resample(out_dim, upsample_mode, **kw)] if upsample_mode else [])
        self.has_upsample = upsample_mode is not None
        if residual and upsample_mode and out_dim * self.factor_t * 4 % in_dim:
            raise ValueError(f"UpBlock: {in_dim} channels cannot be duplicated into {out_dim} × factor")

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        first_chunk = cache is None
        x_in = x
        caches = []
        for i, resnet in enumerate(self.resnets):
            x, c = resnet(x, _sub(_sub(cache, "resnets"), i))
            caches.append(c)
        new_cache: dict[str, Cache] = {"resnets": tuple(caches)}
        if self.has_upsample:
            up = self.upsampler if self.residual else self.upsamplers[0]
            x, new_cache["upsampler"] = up(x, _sub(cache, "upsampler"))
            if self.residual:
                x = x + dup_up(x_in, self.out_dim, self.factor_t, 2, first_chunk)
        return x, new_cache
