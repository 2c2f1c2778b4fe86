"""The connector S_ψ: VAE latents → the Any4D residual stream at layer ℓ (plus what the heads need from below ℓ).

Default (the paper as reported by secondary sources, see docs of `ConnectorConfig`): ONE 3D convolution, kernel
5×5×5, stride 1×2×2 (time × height × width), padding 2, from the latent channels straight to the trunk width. Time
stride 1 keeps every latent frame, so latent frame k becomes geometry view k (see lgm/correspondence.py).

Outputs (`ConnectorOutput`), everything the Any4D tail Φ_{ℓ+1:L} and its heads consume:
  tokens (B, N·T + 1, D)  the residual stream entering trunk block ℓ: N views of T = h·w tokens (row-major), then
                          the scale token. A learned reference-view embedding is added to view 0 (Any4D itself marks
                          view 0 the same way: the world frame is view 0's camera).
  hook0  (B, N, T, D_enc) the fused encoder features the DPT heads take as hook 0 (a linear read-out of the conv
                          features: the encoder is not run).
  taps   {k: (B, N, T, D)} the trunk taps (norm(x) after block k) for every tap layer k < ℓ, read out linearly;
                          taps at k ≥ ℓ are computed by the real tail.

The scale token is a learned vector plus a zero-initialised linear read-out of the mean token, so at init it is a
constant and it can learn to carry clip-level statistics (Any4D's metric-scale head reads it).

Deeper variants (`blocks > 0`) append residual blocks after the conv, either token-wise MLPs ("mlp") or 3×3×3 convs
("conv"); they are compared against the single conv in the stitching report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

BLOCK_KINDS = ("mlp", "conv")
# Parameters initialised to zero (so a deeper connector starts as the single conv, and the scale token as a constant).
ZERO_INIT = ("fc2.kernel", "scale_proj.kernel")


@dataclasses.dataclass(frozen=True)
class ConnectorConfig:
    """Connector hyper-parameters.

    Attributes:
      kernel: 3D conv kernel (t, h, w). Default (5, 5, 5) (reported for the paper).
      stride: 3D conv stride (t, h, w). Default (1, 2, 2): one view per latent frame; 16×16 pixels per token on
        Wan2.1 (8× VAE). For Wan2.2 (16× VAE) use (1, 1, 1).
      padding: symmetric padding (t, h, w). Default (2, 2, 2).
      blocks: extra residual blocks after the conv (0 = the paper's single conv).
      block_kind: "mlp" (pre-LN token MLP) or "conv" (pre-LN 3×3×3 conv + GELU + linear).
      mlp_ratio: hidden width multiple in the blocks.
      ref_view_embed: add a learned embedding to view 0's tokens.
      pos_embed_grid: side of a learned 2D position table, bilinearly resized to the token grid; 0 = none (the
        conv's zero padding is then the only position signal, as in the paper's single conv).
      dtype: compute dtype ("float32" or "bfloat16"); parameters are fp32 (they are trained).
    """

    kernel: tuple[int, int, int] = (5, 5, 5)
    stride: tuple[int, int, int] = (1, 2, 2)
    padding: tuple[int, int, int] = (2, 2, 2)
    blocks: int = 0
    block_kind: str = "mlp"
    mlp_ratio: int = 4
    ref_view_embed: bool = True
    pos_embed_grid: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("kernel", "stride", "padding"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"connector.{name} must have 3 entries (t, h, w), got {value}")
            object.__setattr__(self, name, value)
        if self.stride[0] != 1:
            raise ValueError(
                f"connector.stride[0] must be 1 (one geometry view per latent frame), got {self.stride[0]}"
            )
        if 2 * self.padding[0] != self.kernel[0] - 1:
            raise ValueError(
                f"connector temporal kernel {self.kernel[0]} with padding {self.padding[0]} changes the number of "
                "views; need kernel = 2·padding + 1"
            )
        if self.block_kind not in BLOCK_KINDS:
            raise ValueError(f"connector.block_kind {self.block_kind!r} is not one of {BLOCK_KINDS}")
        if self.blocks < 0 or self.pos_embed_grid < 0 or self.mlp_ratio < 1:
            raise ValueError("connector.blocks, pos_embed_grid must be ≥ 0 and mlp_ratio ≥ 1")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"connector.dtype {self.dtype!r} must be float32 or bfloat16")

    @classmethod
    def from_dict(cls, d: Any) -> "ConnectorConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown connector config keys {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def grid(self, latent_hw: Sequence[int]) -> tuple[int, int]:
        """(h, w) token grid for an (H', W') latent."""
        return tuple(
            (int(n) + 2 * p - k) // s + 1
            for n, k, s, p in zip(latent_hw, self.kernel[1:], self.stride[1:], self.padding[1:])
        )


@dataclasses.dataclass
class ConnectorOutput:
    """What the Any4D tail needs at stitching layer ℓ (see module doc for shapes)."""

    tokens: jax.Array
    hook0: jax.Array
    taps: dict[int, jax.Array]
    grid: tuple[int, int]
    num_views: int


jax.tree_util.register_dataclass(
    ConnectorOutput, data_fields=["tokens", "hook0", "taps"], meta_fields=["grid", "num_views"]
)


class _Block(nnx.Module):
    """Pre-LN residual block on channels-last features (B, N, h, w, D)."""

    def __init__(self, dim: int, kind: str, mlp_ratio: int, dtype: Any, rngs: nnx.Rngs):
        self.kind = kind
        self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        hidden = dim * mlp_ratio
        if kind == "conv":
            self.fc1 = nnx.Conv(
                dim, hidden, (3, 3, 3), padding=((1, 1),) * 3, dtype=dtype, rngs=rngs,
                kernel_metadata={"out_sharding": (None, None, None, "conv_in", "conv_out")},
            )
        else:
            self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs,
                                  kernel_metadata={"out_sharding": ("embed", "mlp")})
        # Zero-initialised output: a deeper connector starts as the single conv.
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, kernel_init=nnx.initializers.zeros, rngs=rngs,
                              kernel_metadata={"out_sharding": ("mlp", "embed")})

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.norm(x.astype(jnp.float32)).astype(x.dtype)
        y = jax.nn.gelu(self.fc1(y), approximate=False)
        return x + self.fc2(y)


class Connector(nnx.Module):
    """S_ψ. See the module docstring for the outputs.

    Args:
      config: ConnectorConfig.
      latent_channels: C of the (normalised) VAE latents.
      trunk_dim: D, the Any4D trunk width.
      encoder_dim: D_enc, the width of the hook-0 encoder features.
      stitch_layer: ℓ, the trunk block the output enters (0 ≤ ℓ ≤ L).
      tap_layers: the Any4D trunk tap layers; those < ℓ get a linear read-out.
    """

    def __init__(
        self,
        config: ConnectorConfig,
        *,
        latent_channels: int,
        trunk_dim: int,
        encoder_dim: int,
        stitch_layer: int,
        tap_layers: Sequence[int] = (),
        rngs: nnx.Rngs,
    ):
        self.config = config
        self.latent_channels = int(latent_channels)
        self.trunk_dim = int(trunk_dim)
        self.encoder_dim = int(encoder_dim)
        self.stitch_layer = int(stitch_layer)
        self.tap_layers = tuple(int(k) for k in tap_layers if int(k) < self.stitch_layer)
        dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
        self.dtype = dtype
        self.conv = nnx.Conv(
            self.latent_channels,
            self.trunk_dim,
            config.kernel,
            strides=config.stride,
            padding=tuple((p, p) for p in config.padding),
            dtype=dtype,
            rngs=rngs,
            kernel_metadata={"out_sharding": (None, None, None, "conv_in", "conv_out")},
        )
        self.blocks = nnx.List(
            [_Block(self.trunk_dim, config.block_kind, config.mlp_ratio, dtype, rngs) for _ in range(config.blocks)]
        )
        embed_init = nnx.initializers.normal(0.02)
        self.ref_view_embed = (
            nnx.Param(embed_init(rngs.params(), (self.trunk_dim,)), out_sharding=("embed",))
            if config.ref_view_embed else None
        )
        g = config.pos_embed_grid
        self.pos_embed = (
            nnx.Param(embed_init(rngs.params(), (g, g, self.trunk_dim)), out_sharding=(None, None, "embed"))
            if g else None
        )
        self.scale_token = nnx.Param(embed_init(rngs.params(), (self.trunk_dim,)), out_sharding=("embed",))
        self.scale_proj = nnx.Linear(self.trunk_dim, self.trunk_dim, kernel_init=nnx.initializers.zeros, rngs=rngs,
                                     kernel_metadata={"out_sharding": ("embed", None)})
        self.hook0_proj = nnx.Linear(self.trunk_dim, self.encoder_dim, dtype=dtype, rngs=rngs,
                                     kernel_metadata={"out_sharding": ("embed", None)})
        self.tap_proj = nnx.Dict(
            {
                f"layer{k}": nnx.Linear(self.trunk_dim, self.trunk_dim, dtype=dtype, rngs=rngs,
                                        kernel_metadata={"out_sharding": ("embed", None)})
                for k in self.tap_layers
            }
        )

    def __call__(self, latents: jax.Array) -> ConnectorOutput:
        """latents (B, C, F', H', W') normalised VAE latents → ConnectorOutput with N = F' views."""
        if latents.ndim != 5:
            raise ValueError(f"connector: latents must be (B, C, F', H', W'), got shape {latents.shape}")
        if latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"connector: latents have {latents.shape[1]} channels, the connector was built for "
                f"{self.latent_channels} (shape {latents.shape})"
            )
        b, _, n, hh, ww = latents.shape
        grid = self.config.grid((hh, ww))
        if min(grid) < 1:
            raise ValueError(f"connector: latent grid {(hh, ww)} is too small for stride {self.config.stride}")
        x = jnp.transpose(latents, (0, 2, 3, 4, 1)).astype(self.dtype)  # (B, F', H', W', C)
        x = self.conv(x)  # (B, N, h, w, D)
        if self.pos_embed is not None:
            pe = jax.image.resize(self.pos_embed[...], (grid[0], grid[1], self.trunk_dim), "bilinear")
            x = x + pe.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        if self.ref_view_embed is not None:
            x = x.at[:, 0].add(self.ref_view_embed[...].astype(x.dtype))
        t = grid[0] * grid[1]
        feats = x.reshape(b, n * t, self.trunk_dim)
        pooled = jnp.mean(feats.astype(jnp.float32), axis=1)
        scale = self.scale_token[...][None] + self.scale_proj(pooled)
        tokens = jnp.concatenate([feats, scale[:, None].astype(feats.dtype)], axis=1)
        hook0 = self.hook0_proj(x).reshape(b, n, t, self.encoder_dim)
        taps = {k: self.tap_proj[f"layer{k}"](feats).reshape(b, n, t, self.trunk_dim) for k in self.tap_layers}
        return ConnectorOutput(tokens=tokens, hook0=hook0, taps=taps, grid=grid, num_views=n)


def build_connector(
    config: ConnectorConfig,
    *,
    latent_channels: int,
    any4d_config: Any,
    stitch_layer: int,
    seed: int = 0,
) -> Connector:
    """A connector sized for an Any4DConfig (trunk_dim, encoder_dim, trunk_depth, tap_layers) at layer ℓ."""
    depth = int(any4d_config.trunk_depth)
    if not 0 <= stitch_layer <= depth:
        raise ValueError(f"stitch layer {stitch_layer} is outside the trunk's 0..{depth}")
    from vggrpo_jax.lgm.host_init import random_init  # noqa: PLC0415

    # Host-side init with the module's own scheme (fan-in normal kernels, zero-initialised output projections).
    return random_init(
        lambda: Connector(
            config,
            latent_channels=latent_channels,
            trunk_dim=int(any4d_config.trunk_dim),
            encoder_dim=int(any4d_config.encoder_dim),
            stitch_layer=stitch_layer,
            tap_layers=tuple(any4d_config.tap_layers),
            rngs=nnx.Rngs(seed),
        ),
        seed,
        zeros=ZERO_INIT,
    )


__all__ = ["BLOCK_KINDS", "Connector", "ConnectorConfig", "ConnectorOutput", "build_connector"]
