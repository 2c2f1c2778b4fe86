"""Any4DConfig: sizes of the released Any4D (MapAnything-V1 + scene-flow head) and a tiny test preset."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


ANY4D_PRESETS = ("full", "tiny")  # classmethods of Any4DConfig (getattr(Any4DConfig, name))


@dataclasses.dataclass(frozen=True)
class Any4DConfig:
    """Architecture and precision of Any4D (images-only inference path).

    Encoder (DINOv2, no registers): `encoder_*`; its learned position table covers a `pos_grid`² patch grid and is
    bicubic-resampled to other grids. Trunk (alternating-attention transformer): `trunk_*`; block k even attends
    globally over all N·T+1 tokens, odd blocks attend within each view. `tap_layers` are the two trunk blocks whose
    normalised outputs feed the DPT heads (with the fused encoder features and the final trunk output).

    dtype: compute dtype of the encoder and trunk matmuls (norms, softmax statistics and the residual stream stay
      fp32); the DPT / pose / scale heads always compute in fp32.
    param_dtype: storage dtype of every parameter.
    attention_impl: jax.nn.dot_product_attention implementation for the per-view attention (DINOv2, frame blocks;
      ~900 tokens each); None lets XLA choose, "cudnn" picks the fused GPU kernel.
    global_attention: kernel of the global blocks over N·T+1 ≈ 18.6 k tokens (21 views at 336×518): "blocked" is a
      memory-efficient flash-style kernel (default, any platform), "cudnn" the fused GPU kernel, "xla" plain softmax.
    lora_rank / lora_alpha / lora_targets: LoRA adapters on the trunk's linear layers whose in-block name
      (e.g. "attn.qkv", "mlp.fc1") matches one of the regexes; rank 0 means none.
    """

    patch_size: int = 14
    # DINOv2 encoder
    encoder_dim: int = 1024
    encoder_depth: int = 24
    encoder_heads: int = 16
    encoder_mlp_ratio: float = 4.0
    pos_grid: int = 37
    # Alternating-attention trunk
    trunk_dim: int = 768
    trunk_depth: int = 24
    trunk_heads: int = 12
    trunk_mlp_ratio: float = 4.0
    tap_layers: tuple[int, int] = (11, 17)
    # Heads
    dpt_feature_dim: int = 256
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dense_channels: int = 6  # rays (3) + log depth (1) + confidence (1) + mask logit (1)
    flow_channels: int = 3
    pose_resconv_blocks: int = 2
    pose_head_dim: int = 0  # width of the pose head's 1×1 convs and MLP; 0 = the released 4·patch² (784)
    scale_hidden_dim: int = 196
    scale_mlp_layers: int = 2
    norm_eps: float = 1e-6
    # Precision and adapters
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = (r"attn\.qkv", r"attn\.proj", r"mlp\.fc1", r"mlp\.fc2")
    attention_impl: str | None = None  # jax.nn.dot_product_attention implementation: None (XLA), "cudnn", ...
    global_attention: str = "blocked"  # the global blocks' kernel: "blocked" (flash-style), "xla", "cudnn"

    def __post_init__(self) -> None:
        if self.trunk_dim % self.trunk_heads or self.encoder_dim % self.encoder_heads:
            raise ValueError("Any4DConfig: dims must be divisible by the head counts")
        if len(self.tap_layers) != 2 or not all(0 <= t < self.trunk_depth for t in self.tap_layers):
            raise ValueError(f"Any4DConfig.tap_layers must be two block indices in [0, {self.trunk_depth}), got "
                             f"{self.tap_layers}")
        if self.pose_head_dim < 0:
            raise ValueError(f"Any4DConfig.pose_head_dim must be >= 0 (0 = 4·patch²), got {self.pose_head_dim}")
        if tuple(sorted(self.tap_layers)) != tuple(self.tap_layers) or self.tap_layers[0] == self.tap_layers[1]:
            raise ValueError(f"Any4DConfig.tap_layers must be strictly increasing, got {self.tap_layers}")

    @property
    def pose_dim(self) -> int:
        """Width of the pose head: `pose_head_dim`, or the released 4·patch² (784 for patch 14) when it is 0."""
        return self.pose_head_dim or 4 * self.patch_size**2

    @classmethod
    def from_fields(cls, fields: Any, **overrides: Any) -> "Any4DConfig":
        """From a JSON / ConfigDict mapping of field names (a shipped manifest's "model"; lists become tuples),
        with `overrides` (dtype, LoRA) on top. Unknown fields raise, naming them."""
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields).items()}
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"model config: unknown Any4DConfig fields {sorted(unknown)}")
        return cls(**{**kw, **overrides})

    @classmethod
    def full(cls, **overrides: Any) -> "Any4DConfig":
        """The released any4d_4v_combined sizes (≈614 M parameters with the geometric-input encoders)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "Any4DConfig":
        """DINOv2-small width with 2 blocks, a 4-block trunk (dim 64, 4 heads, taps 1 and 2), a small DPT."""
        base = dict(
            encoder_dim=384, encoder_depth=2, encoder_heads=6, pos_grid=4,
            trunk_dim=64, trunk_depth=4, trunk_heads=4, tap_layers=(1, 2),
            dpt_feature_dim=32, dpt_layer_dims=(16, 32, 64, 128),
        )
        base.update(overrides)
        return cls(**base)
