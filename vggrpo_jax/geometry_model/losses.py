"""Supervised losses of a geometry model in Any4D's spirit: factored, scale-normalised, confidence-weighted.

Any4D (MapAnything + scene flow) predicts a scale-free scene (rays, depth along rays, poses, points, flow) and a
metric scale s separately; the model's outputs carry s multiplied in, so the losses divide it back out. Both
scenes are normalised by their mean point distance over the valid (non-sky) pixels of all views, ẑ for the
prediction and z for the ground truth, so every geometric term measures shape, not size; the metric-scale term
alone ties s·ẑ to z (with ẑ held fixed there, so the scale cannot distort the shape).

Terms (each a mean over its pixels / views / clips; `weights` in `LossWeights`):
  points   ‖p̂/ẑ − p/z‖ in view 0's frame, confidence-weighted: c·e − α·log c over valid pixels (DUSt3R's form:
           the confidence learns which pixels are hard, and the reward's confidence filter can drop them)
  depth    |log(d̂/ẑ) − log(d/z)| along the rays, valid pixels (a log error is what AbsRel measures)
  rays     ‖r̂ − r‖ on all pixels (rays are defined on sky too; they carry the intrinsics)
  trans    ‖t̂/ẑ − t/z‖ of every view's camera-to-view-0 translation (view 0's pose is predicted, target identity)
  rot      min(‖q̂ − q‖, ‖q̂ + q‖) of the xyzw quaternions
  scale    |log(s·sg(ẑ)) − log z|
  flow     ‖f̂/ẑ − f/z‖ on view 0's valid pixels, plus the same mean over the moving pixels only (they are few, and
           they are what the reward's dynamic mask needs)
  mask     binary cross-entropy of the non-ambiguous mask against "hits a surface"
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vggrpo_jax.geometry.rotation import rotation_to_quaternion
from vggrpo_jax.geometry_model.targets import GeometryTargets


@dataclasses.dataclass(frozen=True)
class LossWeights:
    points: float = 1.0
    depth: float = 1.0
    rays: float = 1.0
    trans: float = 1.0
    rot: float = 1.0
    scale: float = 0.1
    flow: float = 1.0
    mask: float = 0.1
    conf_alpha: float = 0.2  # α of the confidence-weighted point loss


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, -1) + 1e-12)


def _scene_size(tgt: GeometryTargets) -> jax.Array:
    """(B,) mean distance of the true surface points from view 0's camera over the valid pixels of all views."""
    valid = tgt.valid.astype(jnp.float32)
    return jnp.sum(_norm(tgt.points) * valid, (1, 2, 3)) / jnp.maximum(jnp.sum(valid, (1, 2, 3)), 1.0)


def _rotation_term(quats: jax.Array, tgt: GeometryTargets) -> jax.Array:
    """min(‖q̂ − q‖, ‖q̂ + q‖) of unit xyzw quaternions (B, N, 4), averaged."""
    q_gt = rotation_to_quaternion(tgt.c2w[..., :3, :3])
    return jnp.mean(jnp.minimum(_norm(quats - q_gt), _norm(quats + q_gt)))


def geometry_loss(out, tgt: GeometryTargets, weights: LossWeights = LossWeights()
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """out: Any4DOutput for B clips of N views; tgt: the matching `GeometryTargets`. Returns (loss, {term: value})."""
    b, n = tgt.depth.shape[:2]
    valid = tgt.valid
    vf = valid.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(vf, (1, 2, 3)), 1.0)  # (B,)
    s = out.metric_scale  # (B,)
    bcast = lambda x, nd: x.reshape((b,) + (1,) * (nd - 1))

    gt_norm = _scene_size(tgt)  # (B,)
    pts = out.pts3d / bcast(s, 5)
    pred_norm = jnp.sum(_norm(pts) * vf, (1, 2, 3)) / count
    pn = pts / bcast(pred_norm, 5)
    gn = tgt.points / bcast(gt_norm, 5)
    err_pts = _norm(pn - gn)
    conf = out.conf
    l_points = _masked_mean(conf * err_pts - weights.conf_alpha * jnp.log(conf), valid)

    d_pred = out.depth_along_ray / bcast(s * pred_norm, 4)
    d_gt = tgt.depth / bcast(gt_norm, 4)
    l_depth = _masked_mean(jnp.abs(jnp.log(jnp.maximum(d_pred, 1e-6)) - jnp.log(jnp.where(valid, d_gt, 1.0))), valid)

    l_rays = jnp.mean(_norm(out.rays - tgt.rays))

    t_pred = out.cam_trans / bcast(s * pred_norm, 3)
    t_gt = tgt.c2w[..., :3, 3] / bcast(gt_norm, 3)
    l_trans = jnp.mean(_norm(t_pred - t_gt))
    l_rot = _rotation_term(out.cam_quats, tgt)

    l_scale = jnp.mean(jnp.abs(jnp.log(s) + jax.lax.stop_gradient(jnp.log(pred_norm)) - jnp.log(gt_norm)))

    f_pred = out.scene_flow / bcast(s * pred_norm, 5)
    f_gt = tgt.flow / bcast(gt_norm, 5)
    err_flow = _norm(f_pred - f_gt)  # (B, N, H, W) on view 0's grid
    v0 = jnp.broadcast_to(valid[:, :1], err_flow.shape)
    dyn = jnp.broadcast_to(tgt.dynamic[:, None], err_flow.shape)
    l_flow = _masked_mean(err_flow, v0) + _masked_mean(err_flow, dyn)

    p = jnp.clip(out.mask, 1e-6, 1.0 - 1e-6)
    l_mask = -jnp.mean(vf * jnp.log(p) + (1.0 - vf) * jnp.log1p(-p))

    terms = dict(points=l_points, depth=l_depth, rays=l_rays, trans=l_trans, rot=l_rot, scale=l_scale, flow=l_flow,
                 mask=l_mask)
    loss = sum(getattr(weights, k) * v for k, v in terms.items())
    return loss, terms


def pose_terms(quats: jax.Array, cam_trans: jax.Array, metric_scale: jax.Array, tgt: GeometryTargets
               ) -> tuple[jax.Array, jax.Array]:
    """The rot and trans terms of `geometry_loss` from the pose and scale heads alone (`Any4D.cameras`), for clips
    whose dense maps were not computed. quats (B, N, 4) unit xyzw; cam_trans (B, N, 3) metric; metric_scale (B,).

    Without predicted points there is no ẑ, so the translation is normalised through the scale head instead:
    t̂/s · sg(s) / z (the network's translation, metric by the held scale, over the true scene size) against t/z.
    At the joint optimum (s·ẑ = z) this equals `geometry_loss`'s t̂/(s·ẑ); the stop-gradient keeps the scale
    head's error out of the pose head's target and the pose out of the scale."""
    b = quats.shape[0]
    z = _scene_size(tgt).reshape(b, 1, 1)
    s = metric_scale.reshape(b, 1, 1)
    t_pred = cam_trans / s * jax.lax.stop_gradient(s) / z
    return _rotation_term(quats, tgt), jnp.mean(_norm(t_pred - tgt.c2w[..., :3, 3] / z))


def split_geometry_loss(dense_out, cameras: tuple[jax.Array, jax.Array, jax.Array], tgt: GeometryTargets,
                        weights: LossWeights = LossWeights()) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`geometry_loss` when only the first K of B clips went through the dense heads: every term on those K
    (dense_out, an Any4DOutput for K clips), and the pose terms on the other B − K from `cameras` =
    `Any4D.cameras` of those clips (`pose_terms`). The pose terms are means over all B clips, each clip counted
    once; tgt covers all B clips, the dense ones first."""
    b = tgt.images.shape[0]
    k = dense_out.metric_scale.shape[0]
    if not 0 < k < b or cameras[0].shape[0] != b - k:
        raise ValueError(f"split_geometry_loss: {k} dense clips and {cameras[0].shape[0]} pose-only clips do not "
                         f"split the batch of {b}")
    head = jax.tree.map(lambda x: x[:k], tgt)
    tail = jax.tree.map(lambda x: x[k:], tgt)
    _, terms = geometry_loss(dense_out, head, weights)
    rot, trans = pose_terms(*cameras, tail)
    terms = dict(terms, rot=(k * terms["rot"] + (b - k) * rot) / b, trans=(k * terms["trans"] + (b - k) * trans) / b)
    return sum(getattr(weights, name) * v for name, v in terms.items()), terms


__all__ = ["LossWeights", "geometry_loss", "pose_terms", "split_geometry_loss"]
