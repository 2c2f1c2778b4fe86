"""Any4D checkpoint (torch.save dict, weights under ["model"]) → Flax parameters of `models.any4d.Any4D`.

The Flax modules mirror the PyTorch key names, so the table is generic: dotted key → path (digits become list
indices), `weight` → `kernel` (Linear: transposed; Conv: OIHW → HWIO; the DPT ConvTranspose: (I, O, k, k) → (k, k, I, O),
not flipped, see `PatchConvTranspose`) or → `scale` for LayerNorms; `bias`, `gamma`, `cls_token`, `pos_embed`,
`scale_token` unchanged. On top of that:

* Aliases: the released state dict stores some tensors under several names (`dense_head.0/1.*` =
  `dpt_feature_head.*` / `dpt_regressor_head.*`, the same for `scene_flow_dense_head`, and every DPT
  `scratch.layerK_rn` also as `scratch.layer_rn.{K-1}` and `input_process.{K-1}.1`). They are folded into one
  canonical name; aliases that disagree with each other are an error.
* Dropped on purpose (`DROPPED_PREFIXES`): the geometric-input encoders, multiplied by zero in images-only mode.
* `info_sharing.view_pos_table` is the constant reference-view embedding; it is checked, not loaded.
Everything else is strict: one `CheckpointError` lists all missing, unexpected, mis-shaped or inconsistent keys.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from vggrpo_jax.convert.common import (
    IGNORE,
    CheckpointError,
    Target,
    as_state_dict,
    conv,
    convert_state,
    identity,
    linear,
    to_numpy,
)
from vggrpo_jax.models.any4d.config import Any4DConfig
from vggrpo_jax.models.any4d.dpt import PatchConvTranspose
from vggrpo_jax.models.any4d.layers import LayerNorm
from vggrpo_jax.models.any4d.model import Any4D
from vggrpo_jax.models.any4d.trunk import AlternatingTrunk, reference_view_embedding
from vggrpo_jax.models.lora import LoRAParam

# Geometric-input encoders (rays, depth, depth scale, camera rotation / translation / translation scale, scene-flow
# input): their features are multiplied by a zero mask in images-only mode, so their weights never matter here.
DROPPED_PREFIXES = (
    "ray_dirs_encoder.",
    "depth_encoder.",
    "depth_scale_encoder.",
    "cam_rot_encoder.",
    "cam_trans_encoder.",
    "cam_trans_scale_encoder.",
    "scene_flow_encoder.",
)
# DINOv2's mask token is only used for masked-image pretraining (uniception deletes it; tolerated if present).
DROPPED_KEYS = ("encoder.model.mask_token",)
VIEW_TABLE_KEY = "info_sharing.view_pos_table"

_DPT = r"((?:scene_flow_)?dpt_feature_head)"
_ALIASES = (
    (re.compile(r"^dense_head\.0\."), lambda m: "dpt_feature_head."),
    (re.compile(r"^dense_head\.1\."), lambda m: "dpt_regressor_head."),
    (re.compile(r"^scene_flow_dense_head\.0\."), lambda m: "scene_flow_dpt_feature_head."),
    (re.compile(r"^scene_flow_dense_head\.1\."), lambda m: "scene_flow_dpt_regressor_head."),
)
_RN_ALIASES = (
    re.compile(rf"^{_DPT}\.scratch\.layer_rn\.(\d)\."),
    re.compile(rf"^{_DPT}\.input_process\.(\d)\.1\."),
)


def canonical_key(key: str) -> str:
    """Maps an alias to the one name the converter loads from."""
    for pattern, repl in _ALIASES:
        if pattern.match(key):
            key = pattern.sub(repl(None), key, count=1)
    for pattern in _RN_ALIASES:
        m = pattern.match(key)
        if m:
            key = f"{m.group(1)}.scratch.layer{int(m.group(2)) + 1}_rn." + key[m.end():]
    return key


def _is_dropped(key: str) -> bool:
    return key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES)


class _Dedup(Mapping[str, Any]):
    """The state dict under canonical names, aliases folded (each group checked for equality when loaded)."""

    def __init__(self, sd: Mapping[str, Any], groups: dict[str, list[str]]):
        self._sd, self._groups = sd, groups
        self.inconsistent: list[str] = []

    def __getitem__(self, key: str) -> np.ndarray:
        names = self._groups[key]
        first = to_numpy(self._sd[names[0]])
        for other in names[1:]:
            arr = to_numpy(self._sd[other])
            if arr.shape != first.shape or not np.array_equal(arr, first):
                self.inconsistent.append(f"{other} differs from its alias {names[0]}")
        return first

    def __iter__(self):
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)


def _module_kinds(abstract_model: Any) -> dict[tuple, str]:
    kinds = {}
    for path, module in nnx.iter_modules(abstract_model):
        if isinstance(module, PatchConvTranspose):
            kinds[tuple(path)] = "conv_transpose"
        elif isinstance(module, nnx.Conv):
            kinds[tuple(path)] = "conv"
        elif isinstance(module, LayerNorm):
            kinds[tuple(path)] = "norm"
        elif hasattr(module, "kernel"):
            kinds[tuple(path)] = "linear"
    return kinds


def _transpose_only(w: np.ndarray) -> np.ndarray:
    """PyTorch ConvTranspose (I, O, kh, kw) → (kh, kw, I, O) without the spatial flip."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)))


def key_map_for(abstract_model: Any):
    kinds = _module_kinds(abstract_model)

    def key_map(key: str):
        if _is_dropped(key):
            return IGNORE
        parts = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        module, leaf = parts[:-1], parts[-1]
        kind = kinds.get(module)
        if leaf == "weight" and kind == "norm":
            return Target(module + ("scale",))
        if leaf == "weight" and kind in ("linear", "conv", "conv_transpose"):
            transform = {"linear": linear, "conv": conv, "conv_transpose": _transpose_only}[kind]
            return Target(module + ("kernel",), transform)
        if leaf == "bias" and kind is not None:
            return Target(module + ("bias",))
        if leaf in ("gamma", "cls_token", "pos_embed", "scale_token"):
            return Target(parts, identity)
        return None

    return key_map


def _check_view_table(sd: Mapping[str, Any], config: Any4DConfig) -> list[str]:
    if VIEW_TABLE_KEY not in sd:
        return []
    table = to_numpy(sd[VIEW_TABLE_KEY]).astype(np.float32)
    want = reference_view_embedding(config.trunk_dim)[None]
    if table.shape != want.shape or not np.allclose(table, want, atol=1e-6):
        return [f"{VIEW_TABLE_KEY}: expected the constant reference-view table of shape {want.shape} "
                f"([0, 1, 0, 1, …]), got shape {table.shape}"]
    return []


@functools.lru_cache(maxsize=8)
def _abstract_model(config: Any4DConfig) -> Any4D:
    """The parameter-free (ShapeDtypeStruct) model; tracing the initialisers once per config is enough."""
    return nnx.eval_shape(lambda: Any4D(config, rngs=nnx.Rngs(0)))


def from_torch_state_dict(state_dict: Mapping[str, Any] | str, config: Any4DConfig, *, shardings: Any = None,
                          dtype: Any = None) -> nnx.State:
    """Converts Any4D weights (a mapping of torch tensors / numpy arrays, or a path to the .pth) to `nnx.State`.

    Returns the parameter state of `Any4D(config)` (LoRA adapters, if configured, keep their fresh init).
    shardings: optional pytree of shardings for the abstract state (see parallel.abstract_state_shardings).
    Raises CheckpointError listing every missing, unexpected, mis-shaped or inconsistent key.
    """
    sd = as_state_dict(state_dict)
    abstract = _abstract_model(config)
    _, abs_state, _ = nnx.split(abstract, nnx.Param, ...)

    groups: dict[str, list[str]] = {}
    for key in sd:
        if key == VIEW_TABLE_KEY:
            continue
        groups.setdefault(canonical_key(key), []).append(key)
    dedup = _Dedup(sd, groups)
    mismatched = _check_view_table(sd, config)
    missing = [] if VIEW_TABLE_KEY in sd else [VIEW_TABLE_KEY]

    try:
        state = convert_state(abs_state, dedup, key_map_for(abstract), what="Any4D", dtype=dtype,
                              shardings=shardings, allow_missing=lambda p: p[-1] in ("lora_a", "lora_b"))
    except CheckpointError as err:
        raise CheckpointError("Any4D", err.missing + missing, err.unexpected,
                              err.mismatched + mismatched + dedup.inconsistent) from None
    if missing or mismatched or dedup.inconsistent:
        raise CheckpointError("Any4D", missing, [], mismatched + dedup.inconsistent)
    return _fill_lora(state, config)


def _fill_lora(state: nnx.State, config: Any4DConfig, seed: int = 0) -> nnx.State:
    """LoRA adapters are not in the released checkpoint: give them their init (lora_b = 0, so the model is unchanged).

    Adapters live in the trunk only; it is initialised under jit and only its adapters leave (XLA drops the rest).
    """
    if config.lora_rank <= 0:
        return state
    fresh = jax.jit(lambda: nnx.state(AlternatingTrunk(config, rngs=nnx.Rngs(seed)), LoRAParam))()
    flat = dict(nnx.to_flat_state(state))
    for path, var in nnx.to_flat_state(fresh):
        full = ("info_sharing",) + tuple(path)
        flat[full] = flat[full].replace(var.get_value())
    return nnx.from_flat_state(list(flat.items()))


def load_any4d(path: str, config: Any4DConfig) -> Any4D:
    """Builds Any4D from a released .pth (or a dict) without a random full-size init."""
    graphdef, _, rest = nnx.split(_abstract_model(config), nnx.Param, ...)
    params = from_torch_state_dict(path, config)
    return nnx.merge(graphdef, params, rest)
