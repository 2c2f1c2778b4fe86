"""Shared machinery behind every PyTorch → Flax converter.

A converter is a short *key map*: a function from a PyTorch key to a `Target` (the Flax variable path, a layout
transform, and for scanned stacks the layer index), or `IGNORE`, or None for a key it does not know. `convert_state`
does the rest: it streams tensors one at a time (a 14B checkpoint never needs two full copies in RAM), checks every
shape against the abstract model, stacks per-layer tensors into scanned parameters, and places each finished array
at its target sharding. Any missing, unexpected or mis-shaped key fails the whole conversion with one
`CheckpointError` that lists them all.

Layout conventions (PyTorch → Flax):
  Linear weight (out, in)          → kernel (in, out)                 `linear`
  ConvNd weight (O, I, *k)         → kernel (*k, I, O)                `conv`
  ConvTransposeNd weight (I, O, *k)→ kernel (*k, I, O), spatially flipped, for nnx.ConvTranspose(padding="VALID")  `conv_transpose`
  Norm weight                      → scale                            `identity`
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np
from flax import nnx

from vggrpo_jax.errors import InputError, PathNotFoundError, first_line

Path = tuple[Any, ...]


class CheckpointError(InputError):
    """A checkpoint does not match the model: lists missing, unexpected and mis-shaped keys."""

    def __init__(self, what: str, missing=(), unexpected=(), mismatched=()):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f"{what}: checkpoint does not match the model"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): " + ", ".join(map(str, self.missing)))
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): " + ", ".join(map(str, self.unexpected)))
        if self.mismatched:
            lines.append(f"  mis-shaped ({len(self.mismatched)}): " + ", ".join(map(str, self.mismatched)))
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------- layouts
def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear(w: np.ndarray) -> np.ndarray:
    """(out, in) → (in, out)."""
    if w.ndim != 2:
        raise ValueError(f"linear weight must be 2-D, got {w.shape}")
    return np.ascontiguousarray(w.T)


def conv(w: np.ndarray) -> np.ndarray:
    """(O, I, *k) → (*k, I, O) for any number of spatial dims."""
    nd = w.ndim - 2
    return np.ascontiguousarray(np.transpose(w, tuple(range(2, 2 + nd)) + (1, 0)))


def conv_transpose(w: np.ndarray) -> np.ndarray:
    """PyTorch ConvTranspose (I, O, *k) → (*k, I, O) flipped, the kernel of a gradient-of-conv transpose."""
    nd = w.ndim - 2
    k = np.transpose(w, tuple(range(2, 2 + nd)) + (0, 1))
    return np.ascontiguousarray(k[(slice(None, None, -1),) * nd])


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one PyTorch tensor goes: the Flax variable path, a transform, and for scanned stacks the layer."""

    path: Path
    transform: Callable[[np.ndarray], np.ndarray] = identity
    layer: int | None = None


IGNORE = object()  # returned by a key map for keys that are known and deliberately dropped

KeyMap = Callable[[str], "Target | object | None"]


# ------------------------------------------------------------------------------------------------------ reading
def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor or array-like → numpy, keeping bf16 as ml_dtypes.bfloat16 (no silent rounding)."""
    if isinstance(t, np.ndarray):
        return t
    try:
        import torch  # noqa: PLC0415 - torch is optional at runtime
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(jax.numpy.bfloat16)
        return t.numpy()
    return np.asarray(t)


class LazyStateDict(Mapping[str, np.ndarray]):
    """A read-only mapping from key to numpy array that loads each tensor only when asked (streaming)."""

    def __init__(self, keys: Iterable[str], load: Callable[[str], np.ndarray], source: str):
        self._keys = list(keys)
        self._key_set = set(self._keys)
        self._load = load
        self.source = source

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._key_set:
            raise KeyError(key)
        return to_numpy(self._load(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _safetensors_files(files: list[str], source: str) -> LazyStateDict:
    from safetensors import safe_open  # noqa: PLC0415

    owner: dict[str, str] = {}
    for f in files:
        try:
            with safe_open(f, framework="np") as h:
                for k in h.keys():
                    owner[k] = f
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type, without the file name
            raise InputError(f"{f}: not a readable safetensors file ({first_line(err)}); truncated download?") from err

    def load(key: str) -> np.ndarray:
        f = owner[key]
        try:
            try:
                with safe_open(f, framework="np") as h:
                    return h.get_tensor(key)
            except TypeError:  # numpy has no bfloat16 in safetensors' np backend: read through torch
                with safe_open(f, framework="pt") as h:
                    return to_numpy(h.get_tensor(key))
        except Exception as err:  # noqa: BLE001 - a tensor past the end of a truncated file
            raise InputError(f"{f}: cannot read tensor {key!r} ({first_line(err)}); truncated file?") from err

    return LazyStateDict(owner.keys(), load, source)


def open_state_dict(path: str, subkey: str | None = None) -> LazyStateDict:
    """Opens a PyTorch checkpoint lazily.

    Accepts: a directory with `*.safetensors.index.json` (sharded) or `*.safetensors` files; a `.safetensors` file; a
    `.pth`/`.pt`/`.bin`/`.ckpt` torch.save file (memory-mapped, weights only). For torch files, `subkey` selects a
    nested dict (e.g. "model" for Any4D); by default a lone "model"/"state_dict"/"module" entry is unwrapped.
    """
    if os.path.isdir(path):
        index = sorted(glob.glob(os.path.join(path, "*.safetensors.index.json")))
        if index:
            try:
                with open(index[0]) as fh:
                    weight_map = json.load(fh)["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
                raise InputError(f"{index[0]}: not a safetensors index with a 'weight_map' ({first_line(err)})") from err
            files = sorted({os.path.join(path, f) for f in weight_map.values()})
            missing = [f for f in files if not os.path.exists(f)]
            if missing:
                raise PathNotFoundError(f"{index[0]} names shards that do not exist: {missing}")
            return _safetensors_files(files, path)
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if files:
            return _safetensors_files(files, path)
        torch_files = sorted(
            f for ext in ("pth", "pt", "bin", "ckpt") for f in glob.glob(os.path.join(path, f"*.{ext}"))
        )
        if len(torch_files) == 1:
            return open_state_dict(torch_files[0], subkey)
        raise PathNotFoundError(f"no checkpoint found in {path} (looked for safetensors, .pth, .pt, .bin, .ckpt)")
    if not os.path.exists(path):
        raise PathNotFoundError(f"{path}: no such path")
    if path.endswith(".safetensors"):
        return _safetensors_files([path], path)
    import torch  # noqa: PLC0415

    import zipfile  # noqa: PLC0415

    # torch.save writes a zip archive (memory-mappable); only the pre-1.6 format is loaded without mmap. A damaged zip
    # is reported once, naming the file (not retried in the legacy format, which would fail a second time).
    mmap = zipfile.is_zipfile(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if not mmap and magic == b"PK\x03\x04":
        raise InputError(f"{path}: truncated or corrupt torch checkpoint (a zip archive without its central "
                         "directory); download it again")
    try:
        obj = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt, or holding pickled code (weights_only)
        raise InputError(f"{path}: not a readable torch checkpoint ({first_line(err)})") from err
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    if subkey is not None:
        if subkey not in obj:
            raise CheckpointError(path, missing=[subkey])
        obj = obj[subkey]
    else:
        for k in ("model", "state_dict", "module"):
            if isinstance(obj, Mapping) and k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
    tensors = {k: v for k, v in obj.items() if hasattr(v, "shape")}
    return LazyStateDict(tensors.keys(), tensors.__getitem__, path)


def as_state_dict(state_dict: Mapping[str, Any] | str) -> Mapping[str, Any]:
    """A path is opened lazily; a mapping (numpy arrays or torch tensors) is used as it is."""
    return open_state_dict(state_dict) if isinstance(state_dict, (str, os.PathLike)) else state_dict


# ------------------------------------------------------------------------------------------------------ converting
def _path_str(path: Path) -> str:
    return ".".join(str(p) for p in path)


def convert_state(
    abstract_state: nnx.State,
    state_dict: Mapping[str, Any],
    key_map: KeyMap,
    *,
    what: str = "model",
    dtype: Any = None,
    shardings: nnx.State | None = None,
    allow_missing: Callable[[Path], bool] = lambda path: False,
) -> nnx.State:
    """Fills `abstract_state` (from nnx.eval_shape) with the tensors of `state_dict`, strictly.

    dtype: cast floating arrays to this dtype (default: the abstract variable's dtype).
    shardings: a pytree of shardings matching abstract_state (see parallel.abstract_state_shardings); each array is
      device_put there as soon as it is complete. Default: the default device.
    allow_missing: paths that may stay unfilled (e.g. LoRA adapters absent from a base checkpoint); they keep the
      abstract value's init and must be filled by the caller.
    Raises CheckpointError listing every missing, unexpected and mis-shaped key.
    """
    flat = dict(nnx.to_flat_state(abstract_state))
    flat_shard = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    done: dict[Path, Any] = {}
    stacks: dict[Path, tuple[np.ndarray, set[int]]] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []

    def finish(path: Path, array: np.ndarray) -> None:
        var = flat[path]
        target_dtype = var.get_value().dtype
        if dtype is not None and jax.numpy.issubdtype(target_dtype, jax.numpy.floating):
            target_dtype = dtype
        array = np.asarray(array).astype(target_dtype, copy=False)
        sharding = flat_shard.get(path)
        if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
            sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
        done[path] = jax.device_put(array, sharding) if sharding is not None else jax.numpy.asarray(array)

    for key in state_dict:
        target = key_map(key)
        if target is IGNORE:
            continue
        if target is None or target.path not in flat:
            unexpected.append(key if target is None else f"{key} (-> unknown {_path_str(target.path)})")
            continue
        array = target.transform(to_numpy(state_dict[key]))
        shape = tuple(flat[target.path].get_value().shape)
        if target.layer is None:
            if tuple(array.shape) != shape:
                mismatched.append(f"{key}: {tuple(array.shape)} vs expected {shape} at {_path_str(target.path)}")
                continue
            if target.path in done:
                unexpected.append(f"{key} (duplicate for {_path_str(target.path)})")
                continue
            finish(target.path, array)
        else:
            if not 0 <= target.layer < shape[0] or tuple(array.shape) != shape[1:]:
                mismatched.append(
                    f"{key}: layer {target.layer} {tuple(array.shape)} vs expected {shape[0]}×{shape[1:]} "
                    f"at {_path_str(target.path)}"
                )
                continue
            if target.path not in stacks:
                stacks[target.path] = (np.empty(shape, dtype=array.dtype), set())
            buf, filled = stacks[target.path]
            if target.layer in filled:
                unexpected.append(f"{key} (duplicate layer {target.layer} for {_path_str(target.path)})")
                continue
            buf[target.layer] = array
            filled.add(target.layer)
            if len(filled) == shape[0]:
                finish(target.path, buf)
                del stacks[target.path]

    missing = []
    for path, (buf, filled) in stacks.items():
        missing += [f"{_path_str(path)}[layer {i}]" for i in range(buf.shape[0]) if i not in filled]
    for path in flat:
        if path not in done and path not in stacks and not allow_missing(path):
            missing.append(_path_str(path))
    if missing or unexpected or mismatched:
        raise CheckpointError(what, missing, unexpected, mismatched)

    out = []
    for path, var in flat.items():
        if path in done:
            out.append((path, var.replace(done[path])))
        else:
            out.append((path, var))
    return nnx.from_flat_state(out)


def flatten_state(state: nnx.State) -> dict[str, np.ndarray]:
    """'a.b.c' → numpy array, for inverse (Flax → PyTorch) tables in tests and exports."""
    return {_path_str(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
