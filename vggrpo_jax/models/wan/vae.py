"""The Wan 2.1 / 2.2 video VAE (diffusers' AutoencoderKLWan) in Flax NNX.

API (video at the boundary is (B, C, F, H, W) in [-1, 1], like diffusers):
    vae = WanVAE(WanVAEConfig.wan21(), rngs=nnx.Rngs(0))
    mean, logvar = vae.encode(video)           # (B, z, 1 + (F-1)//4, H/s, W/s) each, logvar clipped to [-30, 20]
    video = vae.decode(latents)                # (B, 3, 1 + 4 (F'-1), H'·s, W'·s), clipped to [-1, 1]
    z = vae.normalize_latents(mean)            # (mean - latents_mean) / latents_std, per channel

Time is processed causally in chunks, exactly like the reference: encode = 1 frame, then chunks of 4 frames; decode =
one latent frame per chunk. The first chunk runs on its own (it has its own shapes and first-chunk behaviours); the
steady chunks run inside one lax.scan that carries every conv's 2-frame cache, so compile time and activation memory
do not grow with the frame count. Inside, activations are channels-last (B, T, H, W, C).

Optional spatial tiling (`encode_tiled` / `decode_tiled`) follows diffusers' tile grid and linear blending, so it
matches `AutoencoderKLWan.enable_tiling(...)` number for number.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vggrpo_jax.models.wan.vae_config import WanVAEConfig, check_num_frames
from vggrpo_jax.models.wan.vae_layers import (
    CausalConv3d,
    MidBlock,
    Resample,
    ResidualBlock,
    ResidualDownBlock,
    RMSNorm,
    UpBlock,
    Cache,
    _sub,
)
from vggrpo_jax.parallel import constrain

__all__ = ["WanVAE", "WanVAEConfig", "Encoder3d", "Decoder3d", "patchify", "unpatchify"]

_ACT = ("batch", None, None, "length", None)  # (B, T, H, W, C): batch over data/fsdp, width over "context"


class Encoder3d(nnx.Module):
    """conv_in → down_blocks → mid_block → norm_out → SiLU → conv_out (2·z channels: mean and logvar)."""

    def __init__(self, cfg: WanVAEConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], (3, 3, 3), padding=(1, 1, 1), **kw)
        blocks: list[nnx.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if cfg.is_residual:
                tds = cfg.temperal_downsample[i] if i != last else False
                blocks.append(ResidualDownBlock(in_dim, out_dim, cfg.num_res_blocks, tds, i != last, **kw))
                continue
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, **kw))
                in_dim = out_dim
            if i != last:
                blocks.append(Resample(out_dim, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d", **kw))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], **kw)
        self.norm_out = RMSNorm(dims[-1], param_dtype=cfg.param_dtype, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, (3, 3, 3), padding=(1, 1, 1), **kw)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c_in = self.conv_in(x, _sub(cache, "conv_in"))
        down = []
        for i, block in enumerate(self.down_blocks):
            x, c = block(x, _sub(_sub(cache, "down_blocks"), i))
            x = constrain(x, _ACT)
            down.append(c)
        x, c_mid = self.mid_block(x, _sub(cache, "mid_block"))
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), _sub(cache, "conv_out"))
        return x, {"conv_in": c_in, "down_blocks": tuple(down), "mid_block": c_mid, "conv_out": c_out}


class Decoder3d(nnx.Module):
    """conv_in → mid_block → up_blocks → norm_out → SiLU → conv_out."""

    def __init__(self, cfg: WanVAEConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        mult = cfg.dim_mult
        dims = [cfg.decoder_dim * u for u in (mult[-1], *mult[::-1])]
        temperal_upsample = cfg.temperal_downsample[::-1]
        last = len(mult) - 1
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], (3, 3, 3), padding=(1, 1, 1), **kw)
        self.mid_block = MidBlock(dims[0], **kw)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0 and not cfg.is_residual:
                in_dim //= 2  # Wan2.1's upsamplers halve the channels
            mode = None
            if i != last:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
            blocks.append(UpBlock(in_dim, out_dim, cfg.num_res_blocks, mode, cfg.is_residual, **kw))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], param_dtype=cfg.param_dtype, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, (3, 3, 3), padding=(1, 1, 1), **kw)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c_in = self.conv_in(x, _sub(cache, "conv_in"))
        x, c_mid = self.mid_block(x, _sub(cache, "mid_block"))
        up = []
        for i, block in enumerate(self.up_blocks):
            x, c = block(x, _sub(_sub(cache, "up_blocks"), i))
            x = constrain(x, _ACT)
            up.append(c)
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), _sub(cache, "conv_out"))
        return x, {"conv_in": c_in, "mid_block": c_mid, "up_blocks": tuple(up), "conv_out": c_out}


# --------------------------------------------------------------------------------------------- 2×2 patchify
def patchify(x: jax.Array, p: int | None) -> jax.Array:
    """(B, F, H, W, C) → (B, F, H/p, W/p, C·p²), channel = c·p² + pw·p + ph (diffusers' order)."""
    if not p or p == 1:
        return x
    b, f, h, w, c = x.shape
    x = x.reshape(b, f, h // p, p, w // p, p, c)
    return x.transpose(0, 1, 2, 4, 6, 5, 3).reshape(b, f, h // p, w // p, c * p * p)


def unpatchify(x: jax.Array, p: int | None) -> jax.Array:
    """Inverse of patchify: (B, F, h, w, C·p²) → (B, F, h·p, w·p, C)."""
    if not p or p == 1:
        return x
    b, f, h, w, cp = x.shape
    x = x.reshape(b, f, h, w, cp // (p * p), p, p)
    return x.transpose(0, 1, 2, 6, 3, 5, 4).reshape(b, f, h * p, w * p, cp // (p * p))


def _run_chunks(step, first: jax.Array, rest: jax.Array | None, unroll: int = 0) -> jax.Array:
    """Runs `step(chunk, cache) -> (out, cache)` over the first chunk, then over `rest` (N, B, T, ...): a Python loop
    when N <= `unroll`, else one lax.scan (see WanVAEConfig.unroll_chunks).

    Returns the outputs concatenated along time: (B, T_out_total, ...).
    """
    y0, cache = step(first, None)
    if rest is None or rest.shape[0] == 0:
        return y0
    if rest.shape[0] <= unroll:
        outs = [y0]
        for chunk in rest:
            y, cache = step(chunk, cache)
            outs.append(y)
        return jnp.concatenate(outs, axis=1)

    def body(carry, chunk):
        y, carry = step(chunk, carry)
        return carry, y

    _, ys = jax.lax.scan(body, cache, rest)
    n, b, t = ys.shape[:3]
    ys = jnp.swapaxes(ys, 0, 1).reshape(b, n * t, *ys.shape[3:])
    return jnp.concatenate([y0, ys], axis=1)


def _blend(a: jax.Array, b: jax.Array, extent: int, axis: int) -> jax.Array:
    """Linear cross-fade of b's first `extent` rows/cols with a's last ones (diffusers' blend_v / blend_h)."""
    extent = min(a.shape[axis], b.shape[axis], extent)
    if extent <= 0:
        return b
    w = (jnp.arange(extent, dtype=jnp.float32) / extent).reshape((-1,) + (1,) * (b.ndim - axis - 1))
    a_tail = jax.lax.slice_in_dim(a, a.shape[axis] - extent, a.shape[axis], axis=axis)
    b_head = jax.lax.slice_in_dim(b, 0, extent, axis=axis)
    mixed = a_tail * (1 - w) + b_head * w
    return jnp.concatenate([mixed, jax.lax.slice_in_dim(b, extent, b.shape[axis], axis=axis)], axis=axis)


def _tiled(x, fn, tile_min, tile_stride, ratio: int, *, down: bool, patch: int = 1) -> jax.Array:
    """Runs `fn` on overlapping (H, W) tiles of channels-last x (B, T, H, W, C) and blends them (diffusers' grid).

    down=True (encode): tiles of tile_min pixels every tile_stride pixels, outputs 1/ratio the size.
    down=False (decode): tiles of tile_min/ratio latents every tile_stride/ratio, outputs ×ratio/patch the size.
    """
    (min_h, min_w), (stride_h, stride_w) = tile_min, tile_stride
    height, width = x.shape[2:4]
    if down:
        in_min, in_stride = (min_h, min_w), (stride_h, stride_w)
        out_stride = (stride_h // ratio, stride_w // ratio)
        blend = (min_h // ratio - out_stride[0], min_w // ratio - out_stride[1])
        out_size = (height // ratio, width // ratio)
    else:
        in_min, in_stride = (min_h // ratio, min_w // ratio), (stride_h // ratio, stride_w // ratio)
        out_stride = (stride_h // patch, stride_w // patch)
        blend = (min_h // patch - out_stride[0], min_w // patch - out_stride[1])
        out_size = (height * ratio // patch, width * ratio // patch)
    if any(v <= 0 or v % ratio for v in (*tile_min, *tile_stride)) or min(out_stride) <= 0:
        raise ValueError(
            f"tiling: tile_sample_min {tuple(tile_min)} and tile_sample_stride {tuple(tile_stride)} must be positive "
            f"multiples of {ratio}"
        )
    rows = []
    for i in range(0, height, in_stride[0]):
        row = []
        for j in range(0, width, in_stride[1]):
            tile = fn(x[:, :, i : i + in_min[0], j : j + in_min[1]])
            if rows:
                tile = _blend(rows[-1][len(row)], tile, blend[0], axis=2)
            if row:
                tile = _blend(row[-1], tile, blend[1], axis=3)
            row.append(tile)
        rows.append(row)
    out = jnp.concatenate(
        [jnp.concatenate([t[:, :, : out_stride[0], : out_stride[1]] for t in row], axis=3) for row in rows], axis=2
    )
    return out[:, :, : out_size[0], : out_size[1]]


class WanVAE(nnx.Module):
    """AutoencoderKLWan: encoder, quant_conv, post_quant_conv, decoder (diffusers parameter names)."""

    def __init__(self, config: WanVAEConfig, rngs: nnx.Rngs):
        self.config = config
        kw = dict(dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        z = config.z_dim
        self.encoder = Encoder3d(config, rngs=rngs)
        self.quant_conv = CausalConv3d(2 * z, 2 * z, (1, 1, 1), **kw)
        self.post_quant_conv = CausalConv3d(z, z, (1, 1, 1), **kw)
        self.decoder = Decoder3d(config, rngs=rngs)

    # ------------------------------------------------------------------------------------------- checks
    def _check_video(self, video: Any) -> None:
        cfg = self.config
        if video.ndim != 5:
            raise ValueError(f"WanVAE.encode: video must be (B, C, F, H, W), got shape {tuple(video.shape)}")
        b, c, f, h, w = video.shape
        if c != cfg.image_channels:
            raise ValueError(f"WanVAE.encode: video has {c} channels, the VAE takes {cfg.image_channels}")
        check_num_frames(f, cfg.temporal_stride)
        s = cfg.spatial_stride
        if h % s or w % s or h == 0 or w == 0:
            raise ValueError(f"WanVAE.encode: height {h} and width {w} must be positive multiples of {s}")

    def _check_latents(self, z: Any) -> None:
        if z.ndim != 5 or z.shape[1] != self.config.z_dim or z.shape[2] < 1:
            raise ValueError(
                f"WanVAE.decode: latents must be (B, {self.config.z_dim}, F', H', W') with F' ≥ 1, "
                f"got shape {tuple(z.shape)}"
            )

    # ------------------------------------------------------------------------------------------- encode / decode
    def _encode_raw(self, x: jax.Array) -> jax.Array:
        """Patchified channels-last video (B, F, H, W, C) → quant_conv output (B, F', h, w, 2z), fp32."""
        b, f = x.shape[:2]
        k = (f - 1) // 4
        rest = None
        if k:
            rest = jnp.swapaxes(x[:, 1:].reshape(b, k, 4, *x.shape[2:]), 0, 1)  # (k, B, 4, H, W, C)
        h = _run_chunks(self.encoder, x[:, :1], rest, self.config.unroll_chunks)
        return self.quant_conv(h)[0].astype(jnp.float32)

    def _decode_raw(self, z: jax.Array) -> jax.Array:
        """Channels-last latents (B, F', h, w, z) → decoder output (B, F, H, W, C·p²) before unpatchify/clipping."""
        z = constrain(self.post_quant_conv(z.astype(self.config.dtype))[0], _ACT)
        rest = jnp.swapaxes(z[:, 1:], 0, 1)[:, :, None]  # (F'-1, B, 1, h, w, z)
        return _run_chunks(self.decoder, z[:, :1], rest, self.config.unroll_chunks).astype(jnp.float32)

    def _video_in(self, video: jax.Array) -> jax.Array:
        self._check_video(video)
        x = jnp.transpose(jnp.asarray(video), (0, 2, 3, 4, 1)).astype(self.config.dtype)  # (B, F, H, W, C)
        return constrain(patchify(x, self.config.patch_size), _ACT)

    @staticmethod
    def _split(h: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, logvar = jnp.split(h, 2, axis=-1)
        logvar = jnp.clip(logvar, -30.0, 20.0)
        return jnp.transpose(mean, (0, 4, 1, 2, 3)), jnp.transpose(logvar, (0, 4, 1, 2, 3))

    def _video_out(self, x: jax.Array, clip: bool = True) -> jax.Array:
        x = unpatchify(x, self.config.patch_size)
        if clip:
            x = jnp.clip(x, -1.0, 1.0)
        return jnp.transpose(x, (0, 4, 1, 2, 3))

    def encode(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """video (B, C, F, H, W) in [-1, 1], F = 1 + 4k → (mean, logvar), each (B, z, 1 + k, H/s, W/s)."""
        return self._split(self._encode_raw(self._video_in(video)))

    def decode(self, latents: jax.Array, clip: bool = True) -> jax.Array:
        """latents (B, z, F', H', W') → video (B, C, 1 + 4 (F' - 1), H'·s, W'·s) clipped to [-1, 1].

        ``clip=False`` returns the decoder's raw output (training: the clip's zero gradient would leave overshooting
        pixels without a signal)."""
        self._check_latents(latents)
        z = jnp.transpose(jnp.asarray(latents), (0, 2, 3, 4, 1))
        return self._video_out(self._decode_raw(z), clip)

    # ------------------------------------------------------------------------------------------- spatial tiling
    # Called eagerly, each tile goes through one compiled program per tile shape (the grid has at most four), so a
    # large frame never becomes one huge program; under an outer jit the tiles are simply inlined.
    def encode_tiled(
        self, video: jax.Array, tile_sample_min: tuple[int, int] = (256, 256),
        tile_sample_stride: tuple[int, int] = (192, 192),
    ) -> tuple[jax.Array, jax.Array]:  # fmt: skip
        """encode() over overlapping spatial tiles blended linearly, as diffusers' tiled_encode (same tile grid, so
        the same numbers as `AutoencoderKLWan.enable_tiling(...)`). Tile sizes are in the (patchified) input's
        pixels, like diffusers. Peak memory scales with the tile, not the frame."""
        x = self._video_in(video)
        ratio = self.config.spatial_stride // (self.config.patch_size or 1)
        h = _tiled(x, lambda t: _encode_tile(self, t), tile_sample_min, tile_sample_stride, ratio, down=True)
        return self._split(h)

    def decode_tiled(
        self, latents: jax.Array, tile_sample_min: tuple[int, int] = (256, 256),
        tile_sample_stride: tuple[int, int] = (192, 192),
    ) -> jax.Array:  # fmt: skip
        """decode() over overlapping latent tiles blended linearly in pixel space, as diffusers' tiled_decode."""
        self._check_latents(latents)
        z = jnp.transpose(jnp.asarray(latents), (0, 2, 3, 4, 1))
        p = self.config.patch_size or 1
        ratio = self.config.spatial_stride
        x = _tiled(z, lambda t: _decode_tile(self, t), tile_sample_min, tile_sample_stride, ratio, down=False, patch=p)
        return self._video_out(x)

    # ------------------------------------------------------------------------------------------- latents
    def _stats(self, ndim: int) -> tuple[jax.Array, jax.Array]:
        shape = (1, self.config.z_dim) + (1,) * (ndim - 2)
        mean = jnp.asarray(self.config.latents_mean, jnp.float32).reshape(shape)
        std = jnp.asarray(self.config.latents_std, jnp.float32).reshape(shape)
        return mean, std

    def normalize_latents(self, mean: jax.Array) -> jax.Array:
        """(mean - latents_mean) / latents_std over the channel axis 1 (what the Wan DiT sees)."""
        m, s = self._stats(mean.ndim)
        return (mean - m) / s

    def denormalize_latents(self, z: jax.Array) -> jax.Array:
        """z · latents_std + latents_mean (what decode takes)."""
        m, s = self._stats(z.ndim)
        return z * s + m

    def num_frames_for_latents(self, num_latent_frames: int) -> int:
        return self.config.num_frames_for_latents(num_latent_frames)

    def num_latent_frames(self, num_frames: int) -> int:
        return self.config.num_latent_frames(num_frames)


# Per-tile programs for encode_tiled / decode_tiled (compiled once per tile shape).
_encode_tile = nnx.jit(lambda model, x: model._encode_raw(x))
_decode_tile = nnx.jit(lambda model, z: model._decode_raw(z))
