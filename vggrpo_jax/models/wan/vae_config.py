"""WanVAEConfig: the hyper-parameters of the Wan 2.1 / 2.2 video VAE, in diffusers' `AutoencoderKLWan` naming.

Wan2.1: z 16, 8× spatial (three 2× stages), plain residual blocks.
Wan2.2: z 48, 16× spatial = 2×2 input patchify + three 2× stages, residual down/up blocks with parameter-free
average-pool / duplicate shortcuts. Both compress time 4× (F = 1 + 4k frames → F' = 1 + k latent frames).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp

# diffusers' AutoencoderKLWan defaults (Wan2.1) and the Wan2.2-TI2V-5B VAE config: per-channel latent statistics.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

# Keys of a diffusers config.json that carry no architecture information.
VAE_PRESETS = ("wan21", "wan22", "tiny21", "tiny22")  # classmethods of WanVAEConfig (getattr(WanVAEConfig, name))
_IGNORED_DIFFUSERS_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "clip_output", "dropout"}


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of AutoencoderKLWan (diffusers names). `dtype` is the compute dtype, `param_dtype` the storage."""

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int = 4
    scale_factor_spatial: int = 8
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    # Clips with at most this many steady 4-frame chunks run them in a Python loop; longer clips use one lax.scan
    # (flat compile time and activation memory). Same arithmetic either way. Why a loop for short clips: XLA:CPU
    # runs the scan's backward pass ~10× slower than the unrolled one (tiny21 decode gradient of 2 latent frames:
    # 2.98 s scanned, 0.29 s unrolled), which decides the toy VAE's training speed.
    unroll_chunks: int = 4

    def __post_init__(self) -> None:
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.attn_scales:
            raise ValueError(f"WanVAEConfig: attn_scales={self.attn_scales} is not supported (every Wan VAE has none)")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"WanVAEConfig: temperal_downsample has {len(self.temperal_downsample)} entries, "
                f"dim_mult {len(self.dim_mult)} needs {len(self.dim_mult) - 1}"
            )
        if sum(map(bool, self.temperal_downsample)) != 2 or self.scale_factor_temporal != 4:
            raise ValueError(
                "WanVAEConfig: the causal chunking (1 frame, then chunks of 4) needs exactly two temporal "
                f"downsamples (4×); got temperal_downsample={self.temperal_downsample}, "
                f"scale_factor_temporal={self.scale_factor_temporal}"
            )
        if self.spatial_stride != self.scale_factor_spatial:
            raise ValueError(
                f"WanVAEConfig: scale_factor_spatial={self.scale_factor_spatial} but the architecture downsamples by "
                f"{self.spatial_stride} (2^{len(self.dim_mult) - 1} × patch {self.patch_size or 1})"
            )
        p2 = (self.patch_size or 1) ** 2
        if self.in_channels % p2 or self.out_channels % p2:
            raise ValueError(f"WanVAEConfig: in/out channels must be multiples of patch_size² = {p2}")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(
                f"WanVAEConfig: latents_mean/std have {len(self.latents_mean)}/{len(self.latents_std)} entries, "
                f"z_dim is {self.z_dim}"
            )

    # ------------------------------------------------------------------------------------------- derived
    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(map(bool, self.temperal_downsample))

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1) * (self.patch_size or 1)

    @property
    def decoder_dim(self) -> int:
        return self.decoder_base_dim if self.decoder_base_dim is not None else self.base_dim

    @property
    def image_channels(self) -> int:
        """Channels of the video at the API boundary (in_channels counts the patchified channels)."""
        return self.in_channels // (self.patch_size or 1) ** 2

    # ------------------------------------------------------------------------------------------- builders
    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any], **overrides: Any) -> "WanVAEConfig":
        """From a diffusers `AutoencoderKLWan` config: a config.json dict or the in-memory `vae.config` (a FrozenDict).

        diffusers' bookkeeping keys (leading underscore: _class_name, _use_default_values, ...) are ignored; any other
        unknown key raises ValueError naming it.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in dict(config).items():
            if key.startswith("_") or key in _IGNORED_DIFFUSERS_KEYS:
                if key == "dropout" and value:
                    raise ValueError(f"WanVAEConfig: dropout={value} is not supported (inference model)")
                continue
            if key not in fields or key in ("dtype", "param_dtype"):
                unknown.append(key)
                continue
            kwargs[key] = value
        if unknown:
            raise ValueError(f"WanVAEConfig.from_diffusers_config: unknown keys {sorted(unknown)}")
        if kwargs.get("scale_factor_temporal") is None:
            kwargs.pop("scale_factor_temporal", None)
        if kwargs.get("scale_factor_spatial") is None:
            kwargs.pop("scale_factor_spatial", None)
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_diffusers_config(self) -> dict[str, Any]:
        """The kwargs of diffusers' AutoencoderKLWan for this architecture (for parity tests and export)."""
        return dict(
            base_dim=self.base_dim,
            decoder_base_dim=self.decoder_base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            attn_scales=list(self.attn_scales),
            temperal_downsample=list(self.temperal_downsample),
            is_residual=self.is_residual,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            patch_size=self.patch_size,
            scale_factor_temporal=self.scale_factor_temporal,
            scale_factor_spatial=self.scale_factor_spatial,
            latents_mean=list(self.latents_mean),
            latents_std=list(self.latents_std),
        )

    @classmethod
    def wan21(cls, **overrides: Any) -> "WanVAEConfig":
        """Wan2.1 VAE (Wan-AI/Wan2.1-T2V-*-Diffusers/vae): base 96, z 16, 8× spatial."""
        return cls(**overrides)

    @classmethod
    def wan22(cls, **overrides: Any) -> "WanVAEConfig":
        """Wan2.2 VAE (Wan-AI/Wan2.2-TI2V-5B-Diffusers/vae): base 160 / decoder 256, z 48, 16× spatial, patch 2."""
        kw: dict[str, Any] = dict(
            base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_spatial=16, latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
        )  # fmt: skip
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def tiny21(cls, **overrides: Any) -> "WanVAEConfig":
        """A tiny Wan2.1-form VAE (base 16, one res block per stage) for tests."""
        kw: dict[str, Any] = dict(base_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def tiny22(cls, **overrides: Any) -> "WanVAEConfig":
        """A tiny Wan2.2-form (residual, patchified, z 48) VAE for tests."""
        kw: dict[str, Any] = dict(base_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1)
        kw.update(overrides)
        return cls.wan22(decoder_base_dim=None, **kw)

    # ------------------------------------------------------------------------------------------- frame counts
    def num_latent_frames(self, num_frames: int) -> int:
        """F = 1 + 4k → F' = 1 + k; other F raise ValueError."""
        check_num_frames(num_frames, self.temporal_stride)
        return 1 + (num_frames - 1) // self.temporal_stride

    def num_frames_for_latents(self, num_latent_frames: int) -> int:
        """F' latent frames decode to 1 + 4 (F' - 1) video frames."""
        if num_latent_frames < 1:
            raise ValueError(f"need at least one latent frame, got {num_latent_frames}")
        return 1 + self.temporal_stride * (num_latent_frames - 1)


def check_num_frames(num_frames: int, temporal_stride: int = 4) -> None:
    """The one frame-count check: Wan's causal VAE encodes exactly F = 1 + stride·k frames (ValueError otherwise)."""
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        raise ValueError(
            f"Wan needs 1 + {temporal_stride}k frames (the causal VAE: 1, 5, 9, …, 17, 33, 81); got {num_frames} frames"
        )


def as_tuple(x: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,) * n
