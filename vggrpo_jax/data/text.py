"""Text conditioning for Wan: tokenizer, UMT5 embeddings trimmed and zero-padded to 512, an on-disk cache, and the
empty-string negative prompt for classifier-free guidance.

Convention (diffusers `WanPipeline._get_t5_prompt_embeds` and the original Wan `T5EncoderModel`):
  1. clean the prompt: HTML-unescape twice, strip, collapse whitespace runs to one space;
  2. tokenize with the special tokens (T5 appends EOS "</s>"), pad to max_length 512 and truncate to it;
  3. run the encoder on the padded (B, 512) ids with the attention mask;
  4. keep the first `length` rows of each sequence, length = mask.sum() (the EOS row included), and set the rest to
     ZERO (not the encoder's padded-position outputs) -> (B, 512, D) float32.
The empty prompt "" is one EOS token, so the negative embedding has one non-zero row.
(diffusers and Wan also run `ftfy.fix_text` in the cleaning when ftfy is installed; it only repairs mojibake and is
not applied here. The cleaning version is part of the cache identity.)

The cache stores each prompt's trimmed (length, D) embedding in its own .npz file, keyed by the cleaned prompt and the
identity of the encoder (checkpoint fingerprint + tokenizer files + max_length + cleaning), so training can read the
embeddings without loading the 5.7B encoder and a different checkpoint never reads stale entries.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import os
import re
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

MAX_LENGTH = 512
CLEANING_VERSION = "html-unescape-x2+whitespace/v1"


def clean_prompt(text: str) -> str:
    """Wan/diffusers prompt cleaning without ftfy: html.unescape twice, strip, collapse whitespace."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}: {text!r}")
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(path: str | os.PathLike) -> Any:
    """The UMT5 tokenizer from a LOCAL directory (e.g. the `tokenizer/` folder of a Wan diffusers checkpoint).

    Never downloads. Raises FileNotFoundError when the directory is missing or holds no tokenizer files, and
    ValueError when the tokenizer lacks the pad or EOS token the padding/trimming convention needs.
    """
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy import only when a tokenizer is needed

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path} (tokenizers are only loaded from local dirs)")
    known = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
    if not any(os.path.isfile(os.path.join(path, f)) for f in known):
        raise FileNotFoundError(f"no tokenizer files ({', '.join(known)}) in {path}")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    check_tokenizer(tokenizer, where=path)
    return tokenizer


def check_tokenizer(tokenizer: Any, where: str = "tokenizer") -> None:
    """The trimming convention needs pad and EOS tokens, right padding and right truncation (keep the beginning)."""
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(
            f"{where}: pad_token_id={tokenizer.pad_token_id}, eos_token_id={tokenizer.eos_token_id}; UMT5 needs both"
        )
    sides = {"padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side}
    if set(sides.values()) != {"right"}:
        raise ValueError(f"{where}: {sides}; Wan's trim-to-length convention needs both on the right")


def tokenize(tokenizer: Any, prompts: Sequence[str], max_length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Cleaned prompts → ids (B, max_length) int32 and attention mask (B, max_length) int32, EOS appended, right
    padded, truncated to max_length."""
    enc = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the ids: the full serialised fast tokenizer (normaliser, model, post-processor) when
    there is one, otherwise the vocabulary and special tokens; plus the class and max-length handling."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        body = json.dumps([sorted(tokenizer.get_vocab().items()), [tokenizer.pad_token, tokenizer.eos_token]])
    head = f"{type(tokenizer).__name__}|{tokenizer.padding_side}|{tokenizer.truncation_side}|"
    return hashlib.sha256((head + body).encode()).hexdigest()


def pad_embeddings(trimmed: Sequence[np.ndarray], max_length: int = MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """[(len_i, D)] → (B, max_length, D) float32 with zeros after len_i, and lengths (B,) int32."""
    if not trimmed:
        raise ValueError("pad_embeddings: no embeddings")
    dims = {e.shape[-1] for e in trimmed}
    if len(dims) != 1 or any(e.ndim != 2 for e in trimmed):
        raise ValueError(f"pad_embeddings: expected (len, D) arrays of one width, got {[e.shape for e in trimmed]}")
    out = np.zeros((len(trimmed), max_length, dims.pop()), np.float32)
    lengths = np.zeros((len(trimmed),), np.int32)
    for i, e in enumerate(trimmed):
        if not 0 < e.shape[0] <= max_length:
            raise ValueError(f"pad_embeddings: embedding {i} has {e.shape[0]} rows, expected 1..{max_length}")
        out[i, : e.shape[0]] = e
        lengths[i] = e.shape[0]
    return out, lengths


# ---------------------------------------------------------------------------------------------------- cache
class EmbeddingCache:
    """On-disk prompt → trimmed (length, D) float32 embedding, for one encoder identity.

    Layout: root/<identity[:16]>/manifest.json and root/<identity[:16]>/<key[:2]>/<key>.npz, key = sha256(identity,
    cleaned prompt). Each entry also stores its prompt, checked on read. Writes are atomic (temp file + rename), so
    concurrent writers and crashes never leave a partial entry.
    """

    def __init__(self, root: str | os.PathLike, identity: str, max_length: int = MAX_LENGTH):
        if not identity:
            raise ValueError("EmbeddingCache: identity (encoder fingerprint) must be a non-empty string")
        self.root = os.fspath(root)
        self.identity = identity
        self.max_length = max_length
        self.dir = os.path.join(self.root, identity[:16])
        manifest = os.path.join(self.dir, "manifest.json")
        if os.path.isfile(manifest):
            with open(manifest) as fh:
                stored = json.load(fh)
            if stored.get("identity") != identity:
                raise ValueError(f"{manifest}: identity {stored.get('identity')!r} != {identity!r} (prefix collision)")
        else:
            os.makedirs(self.dir, exist_ok=True)
            self._atomic_write(manifest, json.dumps({"identity": identity, "max_length": max_length}).encode())

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.identity}\n{clean_prompt(prompt)}".encode()).hexdigest()

    def _path(self, prompt: str) -> str:
        k = self.key(prompt)
        return os.path.join(self.dir, k[:2], f"{k}.npz")

    def _atomic_write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def __contains__(self, prompt: str) -> bool:
        return os.path.isfile(self._path(prompt))

    def get(self, prompt: str) -> np.ndarray | None:
        """The trimmed (length, D) embedding, or None on a miss."""
        path = self._path(prompt)
        if not os.path.isfile(path):
            return None
        with np.load(path) as data:
            if str(data["prompt"]) != clean_prompt(prompt):
                raise ValueError(f"{path}: stored prompt {str(data['prompt'])!r} != {clean_prompt(prompt)!r}")
            return np.asarray(data["embedding"], np.float32)

    def put(self, prompt: str, embedding: np.ndarray) -> None:
        embedding = np.asarray(embedding, np.float32)
        if embedding.ndim != 2 or not 0 < embedding.shape[0] <= self.max_length:
            raise ValueError(f"EmbeddingCache.put: expected a trimmed (1..{self.max_length}, D) array, got {embedding.shape}")
        buf = io.BytesIO()
        np.savez(buf, embedding=embedding, prompt=np.asarray(clean_prompt(prompt)))
        self._atomic_write(self._path(prompt), buf.getvalue())

    def missing(self, prompts: Sequence[str]) -> list[str]:
        return [p for p in prompts if p not in self]

    def load_batch(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_length, D) zero-padded embeddings and lengths (B,), from the cache only (no encoder).

        Raises KeyError listing the prompts that are not cached (run tools/cache_text_embeddings.py for them).
        """
        found = [self.get(p) for p in prompts]
        missing = [p for p, e in zip(prompts, found) if e is None]
        if missing:
            raise KeyError(
                f"{len(missing)} prompt(s) not in the embedding cache {self.dir}: {missing[:5]}"
                + (" ..." if len(missing) > 5 else "")
            )
        return pad_embeddings(found, self.max_length)


# ---------------------------------------------------------------------------------------------------- encoder
def encoder_identity(checkpoint_fingerprint: str, tokenizer: Any, max_length: int, compute_dtype: Any) -> str:
    """The cache identity: weights, tokenizer, sequence length, matmul dtype and prompt cleaning."""
    parts = [checkpoint_fingerprint, tokenizer_fingerprint(tokenizer), str(max_length),
             np.dtype(compute_dtype).name, CLEANING_VERSION]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _forward_fn(graphdef: Any) -> Callable:
    """One jitted forward per encoder structure, shared by every TextEncoder built on it."""
    return jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))


class TextEncoder:
    """Prompts → Wan text conditioning: (B, 512, D) float32 zero-padded embeddings and lengths (B,).

    encoder: a UMT5Encoder (see vggrpo_jax.convert.umt5.load_encoder); fingerprint: its checkpoint identity (from
    load_encoder); cache: an optional directory or EmbeddingCache for this identity. Batches are padded to
    `batch_size` rows so one compiled program serves every call. With `mesh`, the weights are placed by their logical
    axes, batches are split over the batch axes, and the encoder runs under that mesh.
    """

    def __init__(
        self,
        tokenizer: Any,
        encoder: nnx.Module,
        fingerprint: str,
        *,
        cache: str | os.PathLike | EmbeddingCache | None = None,
        max_length: int = MAX_LENGTH,
        batch_size: int = 8,
        mesh: jax.sharding.Mesh | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"TextEncoder.batch_size must be positive, got {batch_size}")
        check_tokenizer(tokenizer)
        if mesh is not None:
            from vggrpo_jax.parallel import batch_sharding  # noqa: PLC0415

            entry = batch_sharding(mesh, 2).spec[0]
            axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
            shards = int(np.prod([mesh.shape[a] for a in axes]))
            if batch_size % shards:
                raise ValueError(f"TextEncoder.batch_size {batch_size} is not divisible by the {shards} batch shards")
        vocab = len(tokenizer)
        cfg = getattr(encoder, "config", None)
        if cfg is not None and vocab > cfg.vocab_size:
            raise ValueError(f"tokenizer has {vocab} tokens but the encoder's vocab_size is {cfg.vocab_size}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.mesh = mesh
        compute_dtype = cfg.dtype if cfg is not None else jnp.float32
        self.identity = encoder_identity(fingerprint, tokenizer, max_length, compute_dtype)
        if cache is None or isinstance(cache, EmbeddingCache):
            self.cache = cache
        else:
            self.cache = EmbeddingCache(cache, self.identity, max_length)
        if self.cache is not None and self.cache.identity != self.identity:
            raise ValueError("TextEncoder: the given EmbeddingCache belongs to another encoder identity")
        self.encoder_batches = 0  # forward passes run (for logs and tests)
        self._negative: dict[str, np.ndarray] = {}
        graphdef, state = nnx.split(encoder)
        if mesh is not None:  # a no-op for weights already placed there (load_encoder(..., mesh=mesh))
            from vggrpo_jax.parallel import place_state  # noqa: PLC0415

            state = place_state(state, mesh)
        self._graphdef, self._state = graphdef, state
        self._forward = _forward_fn(graphdef)
        self.fingerprint = fingerprint

    @property
    def encoder(self) -> nnx.Module:
        """The encoder module (its current weights), e.g. to export it."""
        return nnx.merge(self._graphdef, self._state)

    def _run(self, cleaned: list[str]) -> list[np.ndarray]:
        """Encodes up to batch_size cleaned prompts → their trimmed (length, D) float32 embeddings."""
        ids, mask = tokenize(self.tokenizer, cleaned, self.max_length)
        n = len(cleaned)
        if n < self.batch_size:  # fill with copies of row 0 (never an all-masked row); discarded below
            fill = self.batch_size - n
            ids = np.concatenate([ids, np.repeat(ids[:1], fill, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
        if self.mesh is not None:
            from vggrpo_jax.parallel import shard_batch  # noqa: PLC0415

            with jax.set_mesh(self.mesh):
                ids_d, mask_d = shard_batch((ids, mask), self.mesh)
                out = self._forward(self._state, ids_d, mask_d)
        else:
            out = self._forward(self._state, ids, mask)
        if not out.is_fully_addressable:  # multi-host: every process gets the whole batch
            from jax.experimental import multihost_utils  # noqa: PLC0415

            out = multihost_utils.process_allgather(out, tiled=True)
        out = np.asarray(jax.device_get(out), np.float32)
        self.encoder_batches += 1
        lengths = mask[:n].sum(axis=1)
        return [out[i, : lengths[i]] for i in range(n)]

    def encode_trimmed(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Each prompt's (length, D) embedding; cache hits skip the encoder, misses are computed and stored."""
        if isinstance(prompts, str):
            raise TypeError("TextEncoder.encode takes a list of prompts, got a single str")
        cleaned = [clean_prompt(p) for p in prompts]
        result: dict[str, np.ndarray] = {}
        todo: dict[str, None] = {}  # ordered set of distinct misses
        for p in cleaned:
            if p in result or p in todo:
                continue
            hit = self.cache.get(p) if self.cache is not None else None
            if hit is None:
                todo[p] = None
            else:
                result[p] = hit
        todo = list(todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for p, emb in zip(chunk, self._run(chunk)):
                result[p] = emb
                if self.cache is not None:
                    self.cache.put(p, emb)
        return [result[p] for p in cleaned]

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_length, D) float32 embeddings, zero after each prompt's token count, and lengths (B,) int32."""
        if len(prompts) == 0:
            raise ValueError("TextEncoder.encode: empty prompt list")
        return pad_embeddings(self.encode_trimmed(prompts), self.max_length)

    def negative_embedding(self, negative_prompt: str = "") -> np.ndarray:
        """(max_length, D) embedding of the negative prompt for CFG (default: the empty string, one EOS row)."""
        if negative_prompt not in self._negative:
            self._negative[negative_prompt] = self.encode([negative_prompt])[0][0]
        return self._negative[negative_prompt]


class CachedTextEncoder:
    """The TextEncoder interface (encode_trimmed, encode, negative_embedding) served by a filled EmbeddingCache alone.

    No encoder weights are loaded, so a run whose prompts were all cached by tools/cache_text_embeddings.py never
    holds UMT5 (5.7B parameters, 11 GiB in bf16) in device memory. A prompt that is not cached raises KeyError naming
    it (build the cache for the prompt file first).
    """

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.max_length = cache.max_length
        self.identity = cache.identity
        self.encoder_batches = 0  # never runs an encoder (same counter as TextEncoder, for logs and tests)

    def encode_trimmed(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Each prompt's trimmed (length, D) float32 embedding, from the cache."""
        if isinstance(prompts, str):
            raise TypeError("CachedTextEncoder.encode_trimmed takes a list of prompts, got a single str")
        found = [self.cache.get(p) for p in prompts]
        missing = [p for p, e in zip(prompts, found) if e is None]
        if missing:
            raise KeyError(f"{len(missing)} prompt(s) not in the embedding cache {self.cache.dir}: {missing[:5]}; "
                           "fill it with tools/cache_text_embeddings.py")
        return found

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_length, D) float32 zero-padded embeddings and lengths (B,) int32."""
        if len(prompts) == 0:
            raise ValueError("CachedTextEncoder.encode: empty prompt list")
        return pad_embeddings(self.encode_trimmed(prompts), self.max_length)

    def negative_embedding(self, negative_prompt: str = "") -> np.ndarray:
        """(max_length, D) embedding of the negative prompt (cached by the tool with every prompt file)."""
        return self.encode([negative_prompt])[0][0]


def text_encoder_from_paths(
    tokenizer_dir: str,
    encoder_path: str,
    *,
    cache_dir: str | None = None,
    batch_size: int = 8,
    dtype: Any = None,
    compute_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
) -> TextEncoder:
    """Tokenizer dir + encoder checkpoint (converted orbax dir or PyTorch) → TextEncoder (with a cache if given).

    dtype: weight storage dtype (default: as stored); compute_dtype: matmul dtype (e.g. jnp.bfloat16 for XXL).
    """
    from vggrpo_jax.convert.umt5 import load_encoder  # noqa: PLC0415

    tokenizer = load_tokenizer(tokenizer_dir)
    model, fingerprint = load_encoder(encoder_path, dtype=dtype, compute_dtype=compute_dtype, mesh=mesh)
    return TextEncoder(tokenizer, model, fingerprint, cache=cache_dir, batch_size=batch_size, mesh=mesh)


def open_cache(
    cache_dir: str,
    tokenizer: Any,
    encoder_path: str,
    *,
    dtype: Any = None,
    compute_dtype: Any = jnp.float32,
    max_length: int = MAX_LENGTH,
) -> EmbeddingCache:
    """The cache that a TextEncoder built from the same tokenizer/checkpoint/dtypes fills, opened WITHOUT loading the
    encoder (training reads embeddings through `EmbeddingCache.load_batch`). `tokenizer`: a directory or tokenizer."""
    from vggrpo_jax.convert.umt5 import encoder_fingerprint  # noqa: PLC0415

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    identity = encoder_identity(encoder_fingerprint(encoder_path, dtype=dtype), tokenizer, max_length, compute_dtype)
    return EmbeddingCache(cache_dir, identity, max_length)
