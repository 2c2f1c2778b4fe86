"""WanConfig: architecture (diffusers `WanTransformer3DModel` config fields) plus runtime choices.

Architecture fields use diffusers' names, so `WanConfig.from_diffusers_config(json.load(open("config.json")))` reads
a checkpoint's own config. Runtime fields (dtypes, scan, remat, attention kernel, LoRA) never change the function the
model computes, only how it is computed and what is trainable.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax.numpy as jnp

ATTENTION_KINDS = ("auto", "xla", "cudnn", "splash", "blocked")
REMAT_POLICIES = ("none", "full", "save_dots", "save_dots_no_batch", "save_attention", "save_qkv_attention")

# q, k, v and output projections of self- and cross-attention (module paths like "blocks.attn1.to_q").
DEFAULT_LORA_TARGETS = (r"attn[12]\.to_q$", r"attn[12]\.to_k$", r"attn[12]\.to_v$", r"attn[12]\.to_out$")

# Fields of diffusers' config that we read; the others are recorded metadata (_class_name, _diffusers_version, ...).
_DIFFUSERS_FIELDS = (
    "patch_size",
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "text_dim",
    "freq_dim",
    "ffn_dim",
    "num_layers",
    "cross_attn_norm",
    "qk_norm",
    "eps",
    "image_dim",
    "added_kv_proj_dim",
    "rope_max_seq_len",
    "pos_embed_seq_len",
)


def _dtype(d: Any) -> Any:
    return jnp.dtype(d) if isinstance(d, str) else d


@dataclasses.dataclass(frozen=True)
class WanConfig:
    """Wan DiT configuration.

    Architecture (diffusers names): patch_size (t, h, w); num_attention_heads × attention_head_dim = model dim;
    in/out_channels of the latent; text_dim of the text embeddings; freq_dim of the sinusoidal timestep embedding;
    ffn_dim; num_layers; cross_attn_norm (affine LayerNorm before cross-attention); qk_norm ("rms_norm_across_heads");
    eps of every norm; rope_max_seq_len (RoPE table length per axis).

    Runtime:
      dtype: compute dtype of the matmuls (norms, modulation, RoPE, softmax statistics and residuals stay fp32).
      param_dtype: storage dtype of the base weights (LoRA adapters are always fp32).
      scan_layers: stack the blocks and lax.scan over them (fast compiles); False keeps a Python list of blocks.
      remat_policy: "none" | "full" | "save_dots" | "save_dots_no_batch" | "save_attention" | "save_qkv_attention".
      attention: "auto" | "xla" | "cudnn" | "splash" | "blocked" (see models/wan/attention.py).
      attention_block_q / attention_block_kv: tile sizes of the blocked (flash-style) attention.
      lora_rank (0 = no adapters), lora_alpha (None = rank), lora_targets (regexes searched in module paths).
    """

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int | None = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    attention: str = "auto"
    attention_block_q: int = 512
    attention_block_kv: int = 512
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS

    def __post_init__(self):
        # Frozen (hashable: the config sits in the model's graphdef, a jit cache key); normalise in place once.
        set_ = functools.partial(object.__setattr__, self)
        set_("patch_size", tuple(int(p) for p in self.patch_size))
        set_("out_channels", self.out_channels or self.in_channels)
        set_("dtype", _dtype(self.dtype))
        set_("param_dtype", _dtype(self.param_dtype))
        set_("lora_targets", tuple(self.lora_targets))
        self.validate()

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def validate(self) -> None:
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w), got {self.patch_size}")
        if self.qk_norm not in ("rms_norm_across_heads",):
            raise NotImplementedError(f"qk_norm={self.qk_norm!r}: only 'rms_norm_across_heads' (every Wan model)")
        if self.image_dim is not None or self.added_kv_proj_dim is not None or self.pos_embed_seq_len is not None:
            raise NotImplementedError(
                "image-conditioned Wan2.1 I2V/FLF2V (image_dim / added_kv_proj_dim / pos_embed_seq_len) is not "
                "supported; Wan2.2 TI2V conditions through per-token timesteps and needs none of them"
            )
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even for RoPE, got {self.attention_head_dim}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={self.attention!r}; choose one of {ATTENTION_KINDS}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r}; choose one of {REMAT_POLICIES}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")

    def replace(self, **kw: Any) -> "WanConfig":
        return dataclasses.replace(self, **kw)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any], **runtime: Any) -> "WanConfig":
        """From a diffusers transformer config: a config.json dict or the in-memory `transformer.config`; `runtime`
        sets dtype, scan_layers, lora_rank, ... Keys outside the architecture (bookkeeping) are ignored."""
        arch = {k: config[k] for k in _DIFFUSERS_FIELDS if k in config}
        return cls(**arch, **runtime)

    @classmethod
    def from_original_config(cls, config: Mapping[str, Any], **runtime: Any) -> "WanConfig":
        """From an original Wan repo config.json (dim, num_heads, in_dim, out_dim, ffn_dim, ...)."""
        if config.get("model_type", "t2v") not in ("t2v", "ti2v"):
            raise NotImplementedError(f"original Wan model_type={config['model_type']!r}: only t2v and ti2v")
        dim, heads = int(config["dim"]), int(config["num_heads"])
        return cls(
            patch_size=tuple(config.get("patch_size", (1, 2, 2))), num_attention_heads=heads,
            attention_head_dim=dim // heads, in_channels=int(config["in_dim"]), out_channels=int(config["out_dim"]),
            text_dim=int(config.get("text_dim", 4096)), freq_dim=int(config.get("freq_dim", 256)),
            ffn_dim=int(config["ffn_dim"]), num_layers=int(config["num_layers"]),
            cross_attn_norm=bool(config.get("cross_attn_norm", True)), eps=float(config.get("eps", 1e-6)), **runtime,
        )

    @classmethod
    def from_json_dict(cls, config: Mapping[str, Any], **runtime: Any) -> "WanConfig":
        """A diffusers or an original Wan config.json dict (told apart by their field names)."""
        if "num_attention_heads" in config:
            return cls.from_diffusers_config(config, **runtime)
        if "dim" in config and "num_heads" in config:
            return cls.from_original_config(config, **runtime)
        raise ValueError(f"not a Wan transformer config (fields: {sorted(config)})")

    def to_diffusers_config(self) -> dict[str, Any]:
        """The architecture as diffusers' WanTransformer3DModel kwargs (for parity tests and exports)."""
        out = {k: getattr(self, k) for k in _DIFFUSERS_FIELDS}
        out["patch_size"] = list(self.patch_size)
        return out

    # ------------------------------------------------------------------------------------------------ presets
    @classmethod
    def wan21_1_3b(cls, **runtime: Any) -> "WanConfig":
        """Wan2.1-T2V-1.3B: dim 1536, 30 layers, 12 heads × 128, ffn 8960, 16 latent channels."""
        return cls(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16, **runtime)

    @classmethod
    def wan21_14b(cls, **runtime: Any) -> "WanConfig":
        """Wan2.1-T2V-14B: dim 5120, 40 layers, 40 heads × 128, ffn 13824, 16 latent channels."""
        return cls(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16, **runtime)

    @classmethod
    def wan22_ti2v_5b(cls, **runtime: Any) -> "WanConfig":
        """Wan2.2-TI2V-5B: dim 3072, 30 layers, 24 heads × 128, ffn 14336, 48 latent channels, per-token timesteps."""
        return cls(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48, **runtime)

    @classmethod
    def tiny(cls, **runtime: Any) -> "WanConfig":
        """A tiny 2.1-style model for tests: dim 24 (2 heads × 12), 2 layers, 4 latent channels."""
        kw = dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=32, num_layers=2, in_channels=4,
                  out_channels=4, text_dim=16, freq_dim=16, rope_max_seq_len=32)
        kw.update(runtime)
        return cls(**kw)

    @classmethod
    def tiny22(cls, **runtime: Any) -> "WanConfig":
        """A tiny 2.2-style model for tests: 48 latent channels (Wan2.2's VAE), dim 24, 2 layers."""
        return cls.tiny(**{"in_channels": 48, "out_channels": 48, **runtime})

    @classmethod
    def preset(cls, name: str, **runtime: Any) -> "WanConfig":
        presets = {"wan21_1_3b": cls.wan21_1_3b, "wan21_14b": cls.wan21_14b, "wan22_ti2v_5b": cls.wan22_ti2v_5b,
                   "tiny": cls.tiny, "tiny22": cls.tiny22}
        if name not in presets:
            raise ValueError(f"unknown Wan preset {name!r}; known: {sorted(presets)}")
        return presets[name](**runtime)
