"""Attention dispatch for the Wan DiT: plain XLA, cuDNN (GPU), Pallas splash (TPU) and a blocked flash-style kernel.

All kernels take q (B, Lq, H, D), k and v (B, Lk, H, D) (no mask: Wan attends to every token and to all 512 padded
text tokens), scale logits by 1/sqrt(D), keep softmax statistics in fp32 and return (B, Lq, H, D) in q's dtype.

  "xla"      logits → fp32 softmax → weighted sum; materialises (B, H, Lq, Lk). Runs everywhere.
  "blocked"  flash attention in plain JAX: online softmax over key tiles (lax.scan), query tiles mapped, and a
             custom_vjp backward that recomputes the probabilities tile by tile from the saved log-sum-exp, so
             neither pass stores (Lq, Lk). Runs everywhere; the CPU default.
  "cudnn"    jax.nn.dot_product_attention(implementation="cudnn"): CUDA GPU, bf16/fp16 inputs.
  "splash"   jax.experimental.pallas.ops.tpu.splash_attention: TPU.
  "auto"     by platform: TPU → splash, GPU → cudnn for bf16/fp16 (xla for fp32), CPU → blocked.

Under a mesh (jax.set_mesh), "blocked" and "splash" run inside shard_map: queries split over batch, length
(context parallelism) and heads, keys/values over batch and heads and gathered along their length. Requesting a
kernel the platform cannot run raises `AttentionUnavailable` naming the alternatives, before any tracing of the kernel.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from vggrpo_jax.parallel.placement import current_rules
from vggrpo_jax.parallel.rules import logical_to_spec

Q_AXES = ("batch", "length", "heads", "kv")
KV_AXES = ("batch", "kv_length", "heads", "kv")


class AttentionUnavailable(RuntimeError):
    """The requested attention kernel cannot run on this platform / dtype / shape."""


# ------------------------------------------------------------------------------------------------------- xla
def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Reference softmax attention (B, L, H, D); logits and softmax in fp32."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    p = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return o.astype(q.dtype)


# --------------------------------------------------------------------------------------------------- blocked
def _tiles(x: jax.Array, block: int) -> jax.Array:
    """(B, H, L, D) with L = n·block → (n, B, H, block, D)."""
    b, h, l, d = x.shape
    return jnp.moveaxis(x.reshape(b, h, l // block, block, d), 2, 0)


def _untile(x: jax.Array) -> jax.Array:
    n, b, h, blk, d = x.shape
    return jnp.moveaxis(x, 0, 2).reshape(b, h, n * blk, d)


def _scores(qi, kj, j, scale, bk, kv_len):
    s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32) * scale
    if kv_len is not None:  # the last key tile is padded: padded keys get no weight
        valid = (j * bk + jnp.arange(bk)) < kv_len
        s = jnp.where(valid, s, -jnp.inf)
    return s


def _flash_forward(q, k, v, scale, bq, bk, kv_len):
    """q (B, H, Lq, D), k/v (B, H, Lk, D), tile-aligned → out (B, H, Lq, D) fp32-accumulated, lse (B, H, Lq) fp32."""
    kt, vt = _tiles(k, bk), _tiles(v, bk)
    nk = kt.shape[0]

    def one_q_tile(qi):
        b, h, nq_, d = qi.shape
        if nk == 1:  # a single key tile: ordinary softmax, no loop
            s = _scores(qi, kt[0], 0, scale, bk, kv_len)
            m = jnp.max(s, axis=-1)
            p = jnp.exp(s - m[..., None])
            l = jnp.sum(p, axis=-1)
            acc = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vt[0], preferred_element_type=jnp.float32)
            return (acc / l[..., None]).astype(q.dtype), m + jnp.log(l)

        def step(carry, inputs):
            m, l, acc = carry
            kj, vj, j = inputs
            s = _scores(qi, kj, j, scale, bk, kv_len)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            alpha = jnp.exp(m - m_new)
            l = l * alpha + jnp.sum(p, axis=-1)
            acc = acc * alpha[..., None] + jnp.einsum(
                "bhqk,bhkd->bhqd", p.astype(v.dtype), vj, preferred_element_type=jnp.float32
            )
            return (m_new, l, acc), None

        init = (
            jnp.full((b, h, nq_), -jnp.inf, jnp.float32),
            jnp.zeros((b, h, nq_), jnp.float32),
            jnp.zeros((b, h, nq_, d), jnp.float32),
        )
        (m, l, acc), _ = jax.lax.scan(step, init, (kt, vt, jnp.arange(nk)))
        return (acc / l[..., None]).astype(q.dtype), m + jnp.log(l)

    if q.shape[2] == bq:
        return one_q_tile(q)
    out, lse = jax.lax.map(one_q_tile, _tiles(q, bq))
    b, h = q.shape[:2]
    return _untile(out), jnp.moveaxis(lse, 0, 2).reshape(b, h, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _flash(q, k, v, scale, bq, bk, kv_len):
    return _flash_forward(q, k, v, scale, bq, bk, kv_len)[0]


def _flash_fwd(q, k, v, scale, bq, bk, kv_len):
    out, lse = _flash_forward(q, k, v, scale, bq, bk, kv_len)
    return out, (q, k, v, out, lse)


def _flash_bwd(scale, bq, bk, kv_len, res, g):
    q, k, v, out, lse = res
    b, h, lq, d = q.shape
    delta = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # (B, H, Lq): rowsum(dO ∘ O)
    qt, gt = _tiles(q, bq), _tiles(g, bq)
    lset = jnp.moveaxis(lse.reshape(b, h, lq // bq, bq), 2, 0)
    deltat = jnp.moveaxis(delta.reshape(b, h, lq // bq, bq), 2, 0)
    nq = qt.shape[0]

    def kv_tile(dq, inputs):
        kj, vj, j = inputs

        def q_tile(carry, inp):
            dk, dv = carry
            qi, gi, lsei, deltai = inp
            s = _scores(qi, kj, j, scale, bk, kv_len)
            p = jnp.exp(s - lsei[..., None])
            dv = dv + jnp.einsum("bhqk,bhqd->bhkd", p.astype(g.dtype), gi, preferred_element_type=jnp.float32)
            dp = jnp.einsum("bhqd,bhkd->bhqk", gi, vj, preferred_element_type=jnp.float32)
            ds = p * (dp - deltai[..., None]) * scale
            dqi = jnp.einsum("bhqk,bhkd->bhqd", ds.astype(k.dtype), kj, preferred_element_type=jnp.float32)
            dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds.astype(q.dtype), qi, preferred_element_type=jnp.float32)
            return (dk, dv), dqi

        zeros = jnp.zeros((b, h, bk, d), jnp.float32)
        if nq == 1:
            (dk, dv), dqi = q_tile((zeros, zeros), (qt[0], gt[0], lset[0], deltat[0]))
            return dq + dqi, (dk, dv)
        (dk, dv), dqt = jax.lax.scan(q_tile, (zeros, zeros), (qt, gt, lset, deltat))
        return dq + _untile(dqt), (dk, dv)

    kt, vt = _tiles(k, bk), _tiles(v, bk)
    dq0 = jnp.zeros((b, h, lq, d), jnp.float32)
    if kt.shape[0] == 1:
        dq, (dk, dv) = kv_tile(dq0, (kt[0], vt[0], 0))
    else:
        dq, (dkt, dvt) = jax.lax.scan(kv_tile, dq0, (kt, vt, jnp.arange(kt.shape[0])))
        dk, dv = _untile(dkt), _untile(dvt)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_flash.defvjp(_flash_fwd, _flash_bwd)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def blocked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, block_q: int = 512, block_kv: int = 512
) -> jax.Array:
    """Flash-style attention in plain JAX, (B, L, H, D) in and out; memory O(L·tile) in both passes.

    Sequences are padded up to whole tiles (a sequence shorter than a tile is one tile); padded keys are masked.
    """
    lq, lk = q.shape[1], k.shape[1]
    bq, bk = min(block_q, lq), min(block_kv, lk)
    lq_pad, lk_pad = _round_up(lq, bq), _round_up(lk, bk)
    qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # (B, H, L, D): tiles are contiguous per head
    if lq_pad != lq:
        qt = jnp.pad(qt, ((0, 0), (0, 0), (0, lq_pad - lq), (0, 0)))
    kv_len = None
    if lk_pad != lk:
        kt = jnp.pad(kt, ((0, 0), (0, 0), (0, lk_pad - lk), (0, 0)))
        vt = jnp.pad(vt, ((0, 0), (0, 0), (0, lk_pad - lk), (0, 0)))
        kv_len = lk
    out = _flash(qt, kt, vt, 1.0 / math.sqrt(q.shape[-1]), bq, bk, kv_len)
    return jnp.swapaxes(out[:, :, :lq], 1, 2)


# ----------------------------------------------------------------------------------------------------- cudnn
def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """cuDNN fused attention (GPU, bf16/fp16)."""
    platform = jax.default_backend()
    if platform != "gpu":
        raise AttentionUnavailable(
            f"attention='cudnn' needs a CUDA GPU backend, found {platform!r}; use 'auto', 'xla' or 'blocked'"
        )
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise AttentionUnavailable(
            f"attention='cudnn' needs bf16/fp16 inputs, got {q.dtype}; set dtype='bfloat16' or use attention='xla'"
        )
    if q.shape[-1] % 8 or q.shape[-1] > 256:
        raise AttentionUnavailable(f"attention='cudnn' needs head_dim % 8 == 0 and <= 256, got {q.shape[-1]}")
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


# ---------------------------------------------------------------------------------------------------- splash
def _splash_block(n: int) -> int:
    for b in (512, 256, 128):
        if n % b == 0:
            return b
    raise AssertionError(n)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, interpret: bool = False) -> jax.Array:
    """Pallas splash attention (TPU; `interpret=True` runs the kernel's semantics anywhere, slowly, for tests).

    Sequences are padded to multiples of 128; padded keys get their own segment id so no real query attends to them.
    """
    if not interpret and jax.default_backend() != "tpu":
        raise AttentionUnavailable(
            f"attention='splash' needs a TPU backend, found {jax.default_backend()!r}; use 'auto', 'xla' or 'blocked'"
        )
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk  # noqa: PLC0415
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # noqa: PLC0415

    b, lq, h, d = q.shape
    lk = k.shape[1]
    lq_pad, lk_pad = _round_up(lq, 128), _round_up(lk, 128)
    bq, bk = _splash_block(lq_pad), _splash_block(lk_pad)
    blocks = sk.BlockSizes(
        block_q=bq, block_kv=bk, block_kv_compute=bk,
        block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk,
    )
    mask = sm.MultiHeadMask([sm.FullMask((lq_pad, lk_pad)) for _ in range(h)])
    kernel = sk.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)
    scale = 1.0 / math.sqrt(d)

    def prep(x, n):
        x = jnp.swapaxes(x, 1, 2)  # (B, H, L, D)
        return jnp.pad(x, ((0, 0), (0, 0), (0, n - x.shape[2]), (0, 0)))

    qh = prep((q.astype(jnp.float32) * scale).astype(q.dtype), lq_pad)
    kh, vh = prep(k, lk_pad), prep(v, lk_pad)
    seg = sk.SegmentIds(
        q=jnp.asarray((np.arange(lq_pad) >= lq).astype(np.int32)),
        kv=jnp.asarray((np.arange(lk_pad) >= lk).astype(np.int32)),
    )
    out = jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=seg))(qh, kh, vh)
    return jnp.swapaxes(out[:, :, :lq], 1, 2).astype(q.dtype)


# -------------------------------------------------------------------------------------------------- dispatch
def resolve(kind: str, dtype) -> str:
    """The concrete kernel for `kind` on the current platform ("auto" picks; others are checked)."""
    platform = jax.default_backend()
    if kind == "auto":
        if platform == "tpu":
            return "splash"
        if platform == "gpu":
            return "cudnn" if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
        return "blocked"
    if kind == "cudnn" and platform != "gpu":
        raise AttentionUnavailable(
            f"attention='cudnn' needs a CUDA GPU backend, found {platform!r}; use 'auto', 'xla' or 'blocked'"
        )
    if kind == "splash" and platform != "tpu":
        raise AttentionUnavailable(
            f"attention='splash' needs a TPU backend, found {platform!r}; use 'auto', 'xla' or 'blocked'"
        )
    if kind not in ("xla", "blocked", "cudnn", "splash"):
        raise ValueError(f"unknown attention kind {kind!r}")
    return kind


def _under_mesh(fn, q, k, v):
    """Runs a per-device kernel under the current mesh: q split by (batch, length, heads), k/v by (batch, heads)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v)
    rules = current_rules()
    q_spec = logical_to_spec(Q_AXES, mesh, rules, shape=q.shape)
    kv_spec = logical_to_spec(KV_AXES, mesh, rules, shape=k.shape)
    # Heads must be split identically for q and k/v; batch too.
    kv_spec = PartitionSpec(q_spec[0], kv_spec[1], q_spec[2], kv_spec[3])
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"attention: batch of q {q.shape} and k {k.shape} differ")
    return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)(
        q, k, v
    )


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kind: str = "auto", block_q: int = 512, block_kv: int = 512
) -> jax.Array:
    """Dispatches to the kernel `kind` (see module docstring). q (B, Lq, H, D), k/v (B, Lk, H, D)."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[-1] != k.shape[-1] or q.shape[2] != k.shape[2]:
        raise ValueError(f"attention: expected q (B, Lq, H, D) and k = v (B, Lk, H, D), got {q.shape}, {k.shape}, {v.shape}")
    kind = resolve(kind, q.dtype)
    if kind == "xla":
        return xla_attention(q, k, v)
    if kind == "cudnn":
        return cudnn_attention(q, k, v)
    if kind == "splash":
        return _under_mesh(splash_attention, q, k, v)
    return _under_mesh(functools.partial(blocked_attention, block_q=block_q, block_kv=block_kv), q, k, v)
