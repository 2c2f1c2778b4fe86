"""Geometry reprojection-consistency reward r_geo (VGGRPO, "Rewards" 2)."""
from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp
from flax import struct

from vggrpo_jax.geometry.rotation import safe_norm
from vggrpo_jax.geometry.scene import SceneGeometry
from vggrpo_jax.geometry.zbuffer import MIN_DEPTH, ZBufferMethod, check_zbuffer_method, render_depth


@struct.dataclass
class ReprojectionConsistency:
    """reward (...) = −mean of the top_k largest per-view errors; per_view_error (..., N); num_valid (..., N) pixels in
    each view's Ω; scale (...) the median predicted depth the errors were divided by (1 if not normalised)."""

    reward: jax.Array
    per_view_error: jax.Array
    num_valid: jax.Array
    scale: jax.Array


def _subsample(x: Optional[jnp.ndarray], stride: int, h: int, w: int) -> Optional[jnp.ndarray]:
    """Keep the pixel nearest each stride x stride block's centre: x (N, H, W, ...) -> (N, h, w, ...)."""
    if x is None or stride == 1:
        return x
    o = stride // 2
    return x[:, o::stride, o::stride][:, :h, :w]


def _order_key(x: jnp.ndarray) -> jnp.ndarray:
    """float32 -> uint32 with the same order (the IEEE bit trick: negative values have their magnitude bits flipped)."""
    b = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    b = jnp.where(b < 0, b ^ jnp.int32(0x7FFFFFFF), b)
    return jax.lax.bitcast_convert_type(b, jnp.uint32) ^ jnp.uint32(0x80000000)


def _kth_key(key: jnp.ndarray, mask: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
    """The k-th smallest (0-based) key under mask, by radix selection: the largest v with #{key < v} <= k, built one
    bit at a time from the top (32 counting passes; no sort)."""

    def bit(i, ans):
        cand = ans | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        return jnp.where(jnp.sum(mask & (key < cand), dtype=jnp.int32) <= k, cand, ans)

    return jax.lax.fori_loop(0, 32, bit, jnp.uint32(0))


def _masked_quantile(x: jnp.ndarray, mask: jnp.ndarray, q: float) -> jnp.ndarray:
    """``jnp.nanquantile(where(mask, x, nan), q)`` (linear interpolation; NaN if mask is empty) without sorting.

    A full sort of N·H·W values costs more than the whole z-buffer on CPU; selection by counting passes does not.
    x must be finite where mask is set. Differentiable like the sort: the gradient reaches the selected element(s),
    split evenly among exact ties.
    """
    x, mask = x.reshape(-1), mask.reshape(-1)
    key = _order_key(jax.lax.stop_gradient(x))
    n = jnp.sum(mask, dtype=jnp.int32)
    pos = jnp.asarray(q, jnp.float32) * (n - 1).astype(jnp.float32)
    lo_i = jnp.floor(pos).astype(jnp.int32)
    lo = _kth_key(key, mask, lo_i)
    # The next order statistic is lo again if lo repeats past index lo_i, else the smallest key above lo.
    nxt = jnp.min(jnp.where(mask & (key > lo), key, jnp.uint32(0xFFFFFFFF)))
    hi = jnp.where(jnp.sum(mask & (key <= lo), dtype=jnp.int32) >= lo_i + 2, lo, nxt)

    def value(k):
        sel = mask & (key == k)
        return jnp.sum(jnp.where(sel, x, 0.0)) / jnp.maximum(jnp.sum(sel), 1)

    w = pos - lo_i.astype(jnp.float32)
    out = value(lo) * (1 - w) + value(hi) * w
    return jnp.where(n > 0, out, jnp.nan)


def _masked_median(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    m = _masked_quantile(x, mask, 0.5)
    return jnp.where(jnp.isfinite(m) & (m > 0), m, 1.0)


def _dilate(mask: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Binary dilation of (N, h, w) masks by a (2r+1)² square."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    out = jax.lax.reduce_window(mask.astype(jnp.float32), 0.0, jax.lax.max, (1, k, k), (1, 1, 1), "SAME")
    return out > 0


def _dynamic_mask(
    geom_pts, depth, valid, flow, c2w, K, H, W, stride, thresh, convention, depth_tol, dilate, zbuffer
) -> jnp.ndarray:
    """(N, h, w) True where a pixel shows a moving surface."""
    mag = safe_norm(flow)  # (N, h, w)
    if convention == "per_view":
        return _dilate(mag > thresh, dilate)
    # Any4D: flow[k] lives on view 0's grid and moves view 0's points to time k. View 0's dynamic pixels are those
    # that move at any time; in view k, the dynamic surface is where those points, moved to time k, are what the
    # view sees (rendered depth agrees with its own depth). Parts of moving objects hidden from view 0 are missed.
    dyn0 = (jnp.max(mag, axis=0) > thresh) & valid[0]
    moved = geom_pts[0][None] + flow  # (N, h, w, 3)
    mask0 = dyn0.reshape(-1)

    def one(pts_k, c, k):
        d, v = render_depth(pts_k.reshape(-1, 3).T, c, k, H, W, stride, point_mask=mask0, method=zbuffer,
                            transposed=True)
        return d, v

    d_dyn, v_dyn = jax.vmap(one)(moved, c2w, K)
    seen = v_dyn & (jnp.abs(d_dyn - depth) <= depth_tol * depth)
    seen = seen.at[0].set(seen[0] | dyn0)
    return _dilate(seen, dilate)


def reprojection_consistency(
    geometry: SceneGeometry,
    top_k: int = 3,
    *,
    leave_one_out: bool = True,
    normalize: bool = True,
    stride: int = 1,
    conf_quantile: float = 0.1,
    min_conf: Optional[float] = None,
    flow_threshold: float = 0.01,
    flow_convention: Literal["any4d", "per_view"] = "any4d",
    dynamic_depth_tol: float = 0.05,
    dynamic_dilate: int = 1,
    use_scene_flow: bool = True,
    view_batch_size: Optional[int] = None,
    zbuffer: ZBufferMethod = "scatter",
) -> ReprojectionConsistency:
    """r_geo = −(1/top_k) Σ_{i ∈ top_k worst} e_i with e_i = mean_{p ∈ Ω_i} |D̂_i(p) − D_i(p)|.

    The scene point cloud is every view's point map (world coordinates). Points are kept where the depth and points
    are finite with depth > 0; where ``conf`` is given, also where conf >= ``min_conf`` (if set) or else above the
    ``conf_quantile`` quantile of the valid confidences; where ``scene_flow`` is given (and ``use_scene_flow``),
    dynamic points are removed: flow magnitude > ``flow_threshold`` × (median predicted depth), read with
    ``flow_convention``:
      - "any4d": ``scene_flow[k]`` is on view 0's pixel grid and moves view 0's points to time k (Any4D's output,
        ``SceneGeometry``'s documented convention). Dynamic pixels of view k are found by z-buffering view 0's
        moving points, moved to time k, into view k (depth agreement within ``dynamic_depth_tol``).
      - "per_view": ``scene_flow[k]`` is on view k's own grid (any per-pixel world displacement of view k's points).
    Dynamic masks are dilated by ``dynamic_dilate`` pixels to cover silhouettes.

    Each view i is rendered by a z-buffer (``render_depth``: the nearest point per pixel) from the kept points of the
    OTHER views (``leave_one_out``; with False, from all views, its own included). ``zbuffer`` picks its reduction:
    "scatter" (scatter-min; CPU and GPU) or "sort" (sort + binary search, no scatter; TPU); both give the same
    depth maps exactly, so the same reward. ``view_batch_size`` views are rendered at once (default: 1).
    Ω_i = pixels where the rendering is valid and view i's own depth is kept (valid, confident, static). With
    ``normalize`` (default) the errors are divided by the scene's median predicted depth, so a uniformly rescaled
    scene gets the same reward (shrinking cannot help); ``normalize=False`` gives the paper's literal absolute error.

    ``stride`` > 1 renders on a grid ``stride`` times coarser and uses the point maps subsampled to match (the pixel
    nearest each block's centre); cost falls by stride². A view with no valid pixel in Ω, or a non-finite camera,
    gets error +inf (so the reward is −inf; ``group_advantages`` maps that to the worst advantage).

    Jittable (all options are static) and differentiable with respect to depth, points, poses and intrinsics (the
    pixel assignment is piecewise constant). Leading batch dims of ``geometry`` are vmapped.
    """
    if not isinstance(geometry, SceneGeometry):
        raise TypeError(f"reprojection_consistency expects a SceneGeometry, got {type(geometry).__name__}")
    geometry.validate()
    N, H, W = geometry.depth.shape[-3:]
    if leave_one_out and N < 2:
        raise ValueError(f"leave-one-out reprojection needs at least 2 views, got N={N}")
    if not (isinstance(top_k, int) and 1 <= top_k <= N):
        raise ValueError(f"top_k must be an int in [1, N={N}] (the number of views), got {top_k!r}")
    if not (isinstance(stride, int) and stride >= 1) or H // stride < 1 or W // stride < 1:
        raise ValueError(f"stride must be a positive int no larger than the image ({H}x{W}), got {stride!r}")
    if flow_convention not in ("any4d", "per_view"):
        raise ValueError(f"flow_convention must be 'any4d' or 'per_view', got {flow_convention!r}")
    check_zbuffer_method(zbuffer)
    if not 0.0 <= conf_quantile < 1.0:
        raise ValueError(f"conf_quantile must be in [0, 1), got {conf_quantile}")
    kwargs = dict(
        top_k=top_k, leave_one_out=leave_one_out, normalize=normalize, stride=stride,
        conf_quantile=conf_quantile, min_conf=min_conf, flow_threshold=flow_threshold,
        flow_convention=flow_convention, dynamic_depth_tol=dynamic_depth_tol, dynamic_dilate=dynamic_dilate,
        use_scene_flow=use_scene_flow, view_batch_size=view_batch_size, zbuffer=zbuffer,
    )
    fn = lambda g: _single(g, **kwargs)
    for _ in geometry.batch_shape:
        fn = jax.vmap(fn)
    return fn(geometry)


def _single(g: SceneGeometry, *, top_k, leave_one_out, normalize, stride, conf_quantile, min_conf, flow_threshold,
            flow_convention, dynamic_depth_tol, dynamic_dilate, use_scene_flow, view_batch_size, zbuffer):
    N, H, W = g.depth.shape
    h, w = H // stride, W // stride
    depth = _subsample(g.depth, stride, h, w)
    points = _subsample(g.points, stride, h, w)
    conf = _subsample(g.conf, stride, h, w)
    flow = _subsample(g.scene_flow, stride, h, w) if use_scene_flow else None

    cam_ok = jnp.all(jnp.isfinite(g.c2w), (-2, -1)) & jnp.all(jnp.isfinite(g.intrinsics), (-2, -1))
    c2w = jnp.where(cam_ok[:, None, None], g.c2w, jnp.eye(4, dtype=g.c2w.dtype))
    K = jnp.where(cam_ok[:, None, None], g.intrinsics, jnp.eye(3, dtype=g.intrinsics.dtype))

    valid = jnp.isfinite(depth) & (depth > MIN_DEPTH) & jnp.all(jnp.isfinite(points), -1)
    depth = jnp.where(valid, depth, 0.0)  # keep NaNs out of values and gradients
    points = jnp.where(valid[..., None], points, 0.0)
    # Masks and the flow threshold's scale are decisions, not quantities to optimise.
    scale_mask = jax.lax.stop_gradient(_masked_median(depth, valid))

    keep = valid
    if conf is not None:
        c = jax.lax.stop_gradient(conf)
        c_ok = jnp.isfinite(c)
        if min_conf is not None:
            keep &= c_ok & (c >= min_conf)
        elif conf_quantile > 0:
            q = _masked_quantile(c, valid & c_ok, conf_quantile)
            keep &= c_ok & (c >= q)
    if flow is not None:
        f = jnp.where(jnp.isfinite(flow), jax.lax.stop_gradient(flow), 0.0)
        dyn = _dynamic_mask(jax.lax.stop_gradient(points), jax.lax.stop_gradient(depth), valid, f,
                            jax.lax.stop_gradient(c2w), jax.lax.stop_gradient(K), H, W, stride,
                            flow_threshold * scale_mask, flow_convention, dynamic_depth_tol, dynamic_dilate, zbuffer)
        keep &= ~dyn

    flat_pts = points.reshape(-1, 3).T  # (3, N·h·w): the layout render_depth's projection reads
    flat_keep = keep.reshape(-1)
    view_id = jnp.repeat(jnp.arange(N), h * w)

    def render_view(args):
        i, c, k = args
        m = flat_keep & (view_id != i) if leave_one_out else flat_keep
        return render_depth(flat_pts, c, k, H, W, stride, point_mask=m, method=zbuffer, transposed=True)

    # One view at a time by default: vmapping all N keeps N copies of the N·h·w projected points live (N× the
    # memory) and was slower on CPU too (benchmarks/rewards.py).
    d_hat, v_hat = jax.lax.map(render_view, (jnp.arange(N), c2w, K), batch_size=view_batch_size or 1)
    omega = v_hat & keep
    n = jnp.sum(omega, (-2, -1))
    abs_err = jnp.where(omega, jnp.abs(d_hat - depth), 0.0)
    err = jnp.sum(abs_err, (-2, -1)) / jnp.maximum(n, 1)
    scale = _masked_median(depth, keep) if normalize else jnp.ones((), depth.dtype)
    err = err / scale
    err = jnp.where((n > 0) & cam_ok, err, jnp.inf)
    worst, _ = jax.lax.top_k(err, top_k)
    return ReprojectionConsistency(reward=-jnp.mean(worst), per_view_error=err, num_valid=n, scale=scale)
