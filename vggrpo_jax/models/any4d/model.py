"""Any4D (images-only inference): DINOv2 → fusion norm → alternating-attention trunk → DPT / pose / scale heads.

Layer-addressable use (the Latent Geometry Model replaces the first ℓ trunk layers):

    emb = model.embed(images)                        # tokens entering block 0, hook-0 features, patch grid
    x, taps = model.run_blocks(emb.tokens, 0, ℓ, N)  # teacher features entering block ℓ
    x, more = model.run_blocks(x, ℓ, depth, N)       # the tail
    out = model.heads(emb.hook0, {**taps, **more}, x, N, emb.grid, (H, W))

What a caller entering at block ℓ (i.e. supplying `tokens` = the raw residual stream entering block ℓ, shape
(B, N·T+1, D_trunk) with the N views' T row-major patch tokens followed by the one scale token) must also supply to
`heads`:
  * `hook0` (B, N, T, D_enc): the fused encoder features (DINOv2 final-LN patch tokens after `fusion_norm_layer`),
    ALWAYS — the first DPT hook reads them and nothing in the trunk recomputes them;
  * `taps[k]` (B, N, T, D_trunk) for every tap layer k < ℓ (the released model: k = 11 when ℓ > 11, k = 17 when
    ℓ > 17): the trunk's final `norm` applied to the stream after block k, view tokens only. Taps at k ≥ ℓ are produced
    by `run_blocks(tokens, ℓ, depth, N)` itself.
`heads` raises a ValueError naming any missing tap.

Outputs follow the reference exactly, with metric scale s applied to depth, points, translations and scene flow.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx, struct

from vggrpo_jax.geometry import (
    SceneGeometry,
    intrinsics_from_rays,
    pose_from_rotation_translation,
    quaternion_to_rotation,
    ray_depth_to_z,
)
from vggrpo_jax.models.any4d.config import Any4DConfig
from vggrpo_jax.models.any4d.dinov2 import DinoV2
from vggrpo_jax.models.any4d.dpt import DPTFeature, DPTRegressor
from vggrpo_jax.models.any4d.heads import PoseHead, ScaleHead
from vggrpo_jax.models.any4d.layers import LayerNorm
from vggrpo_jax.models.any4d.sharding import shard_tokens, shard_views
from vggrpo_jax.models.any4d.trunk import AlternatingTrunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@struct.dataclass
class Any4DEmbedding:
    """tokens (B, N·T+1, D_trunk) fp32 entering trunk block 0; hook0 (B, N, T, D_enc) fp32; grid (h, w) static."""

    tokens: jax.Array
    hook0: jax.Array
    grid: tuple[int, int] = struct.field(pytree_node=False)


@struct.dataclass
class Any4DOutput:
    """Per-view predictions, fp32. Cameras are camera-to-world with world = view 0's predicted frame, OpenCV axes.

    rays (B, N, H, W, 3) unit camera-frame directions; depth_along_ray (B, N, H, W) metric Euclidean distance;
    depth_z (B, N, H, W) metric z-depth; pts3d_cam (B, N, H, W, 3); cam_quats (B, N, 4) xyzw; cam_trans (B, N, 3)
    metric; c2w (B, N, 4, 4); pts3d (B, N, H, W, 3) world; scene_flow (B, N, H, W, 3) metric world-frame flow of
    view 0's points to time k on view 0's pixel grid; conf (B, N, H, W) ≥ 1; mask (B, N, H, W) probability that the
    pixel is non-ambiguous (the reference's boolean mask is mask > 0.5); metric_scale (B,).
    """

    rays: jax.Array
    depth_along_ray: jax.Array
    depth_z: jax.Array
    pts3d_cam: jax.Array
    cam_quats: jax.Array
    cam_trans: jax.Array
    c2w: jax.Array
    pts3d: jax.Array
    scene_flow: jax.Array
    conf: jax.Array
    mask: jax.Array
    metric_scale: jax.Array


class Any4D(nnx.Module):
    def __init__(self, config: Any4DConfig, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.encoder = nnx.Module()
        self.encoder.model = DinoV2(c, rngs=rngs)
        self.fusion_norm_layer = LayerNorm(c.encoder_dim, c.norm_eps, param_dtype=c.param_dtype)
        self.scale_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (c.encoder_dim,), c.param_dtype))
        self.info_sharing = AlternatingTrunk(c, rngs=rngs)
        dims = (c.encoder_dim, c.trunk_dim, c.trunk_dim, c.trunk_dim)
        self.dpt_feature_head = DPTFeature(dims, c.dpt_layer_dims, c.dpt_feature_dim, rngs=rngs)
        self.dpt_regressor_head = DPTRegressor(c.dpt_feature_dim, c.dense_channels, rngs=rngs)
        self.scene_flow_dpt_feature_head = DPTFeature(dims, c.dpt_layer_dims, c.dpt_feature_dim, rngs=rngs)
        self.scene_flow_dpt_regressor_head = DPTRegressor(c.dpt_feature_dim, c.flow_channels, rngs=rngs)
        self.pose_head = PoseHead(c.trunk_dim, c.pose_dim, c.pose_resconv_blocks, rngs=rngs)
        self.scale_head = ScaleHead(c.trunk_dim, c.scale_hidden_dim, c.scale_mlp_layers, rngs=rngs)

    # ------------------------------------------------------------------------------------------------ stages
    def _check_images(self, images: jax.Array) -> None:
        p = self.config.patch_size
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"Any4D: images must be (B, N, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}")
        if images.shape[3] % p or images.shape[4] % p:
            raise ValueError(f"Any4D: H and W must be multiples of {p}, got {images.shape[3]}x{images.shape[4]}")

    def encode(self, images: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """images (B, N, 3, H, W) in [0, 1] → fused encoder features hook0 (B, N, T, D_enc) and the grid (h, w)."""
        self._check_images(images)
        b, n, _, hh, ww = images.shape
        p = self.config.patch_size
        x = jnp.transpose(images.reshape(b * n, 3, hh, ww).astype(jnp.float32), (0, 2, 3, 1))
        x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        feats = self.encoder.model(shard_views(x))
        # Images-only mode: the geometric-input encoders contribute exactly zero before the fusion norm.
        fused = self.fusion_norm_layer(feats)
        return fused.reshape(b, n, -1, fused.shape[-1]), (hh // p, ww // p)

    def embed(self, images: jax.Array) -> Any4DEmbedding:
        """images (B, N, 3, H, W) RGB in [0, 1] → the stream entering trunk block 0 plus the hook-0 features."""
        hook0, grid = self.encode(images)
        tokens = self.info_sharing.embed(hook0, self.scale_token[...])
        return Any4DEmbedding(tokens=tokens, hook0=hook0, grid=grid)

    def run_blocks(self, tokens: jax.Array, start: int, stop: int, num_views: int
                   ) -> tuple[jax.Array, dict[int, jax.Array]]:
        """Trunk blocks [start, stop) on the raw stream (B, N·T+1, D) → (stream after block stop−1, taps).

        taps: {k: (B, N, T, D) final-norm view tokens after block k} for tap layers k in [start, stop).
        """
        depth = self.config.trunk_depth
        if not 0 <= start <= stop <= depth:
            raise ValueError(f"run_blocks: need 0 <= start <= stop <= {depth}, got [{start}, {stop})")
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.trunk_dim:
            raise ValueError(f"run_blocks: tokens must be (B, N·T+1, {self.config.trunk_dim}), got {tokens.shape}")
        if (tokens.shape[1] - 1) % num_views or tokens.shape[1] <= num_views:
            raise ValueError(f"run_blocks: {tokens.shape[1]} tokens is not N·T+1 for N = {num_views} views")
        return self.info_sharing.run(tokens.astype(jnp.float32), start, stop, num_views)

    def heads(self, hook0: jax.Array, taps: Mapping[int, jax.Array], tokens: jax.Array, num_views: int,
              grid: tuple[int, int], image_hw: tuple[int, int]) -> Any4DOutput:
        """Final norm + DPT geometry + DPT scene flow + pose + scale + adaptors.

        tokens: the raw stream after the last block; taps: {k: (B, N, T, D)} for every tap layer.
        """
        c = self.config
        b = tokens.shape[0]
        h, w = grid
        t = h * w
        missing = [k for k in c.tap_layers if k not in taps]
        if missing:
            raise ValueError(f"heads: taps for trunk layers {missing} are missing (got {sorted(taps)})")
        if tokens.shape != (b, num_views * t + 1, c.trunk_dim):
            raise ValueError(f"heads: tokens {tuple(tokens.shape)} do not match B={b}, N={num_views}, grid {grid}")
        if hook0.shape != (b, num_views, t, c.encoder_dim):
            raise ValueError(f"heads: hook0 {tuple(hook0.shape)} expected {(b, num_views, t, c.encoder_dim)}")
        final = self.info_sharing.norm(tokens.astype(jnp.float32))
        views = b * num_views

        def as_map(x):
            return shard_views(x.astype(jnp.float32).reshape(views, h, w, x.shape[-1]))

        hooks = [as_map(hook0), as_map(taps[c.tap_layers[0]]), as_map(taps[c.tap_layers[1]]),
                 as_map(final[:, :-1])]
        dense = self.dpt_regressor_head(self.dpt_feature_head(hooks), image_hw)
        flow = self.scene_flow_dpt_regressor_head(self.scene_flow_dpt_feature_head(hooks), image_hw)
        trans, quat, scale = self._pose_and_scale(hooks[3], final[:, -1])
        return _adapt(dense, flow, trans, quat, scale, b, num_views)

    def _pose_and_scale(self, view_maps: jax.Array, scale_token: jax.Array
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """view_maps (B·N, h, w, D) final-norm view tokens, scale_token (B, D) → raw per-view translation (B·N, 3),
        quaternion (B·N, 4) and the metric scale (B,)."""
        trans, quat = self.pose_head(view_maps)
        return trans, quat, jnp.clip(jnp.exp(self.scale_head(scale_token)), 1e-8)

    def cameras(self, tokens: jax.Array, num_views: int, grid: tuple[int, int]
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The pose and scale heads alone (no DPT heads), as `heads` computes them: tokens, the raw stream after the
        last block (B, N·T+1, D) → unit xyzw quaternions (B, N, 4), metric camera-to-view-0 translations (B, N, 3)
        and the metric scale (B,). For training pose on more clips than the dense heads can afford."""
        b = tokens.shape[0]
        h, w = grid
        final = self.info_sharing.norm(tokens.astype(jnp.float32))
        maps = shard_views(final[:, :-1].reshape(b * num_views, h, w, final.shape[-1]))
        trans, quat, scale = self._pose_and_scale(maps, final[:, -1])
        quat = quat / jnp.clip(jnp.linalg.norm(quat, axis=-1, keepdims=True), 1e-8)
        trans = trans * jnp.repeat(scale, num_views)[:, None]
        return quat.reshape(b, num_views, 4), trans.reshape(b, num_views, 3), scale

    def __call__(self, images: jax.Array) -> Any4DOutput:
        """images (B, N, 3, H, W) RGB in [0, 1] → Any4DOutput."""
        emb = self.embed(images)
        n = images.shape[1]
        tokens, taps = self.run_blocks(emb.tokens, 0, self.config.trunk_depth, n)
        return self.heads(emb.hook0, taps, tokens, n, emb.grid, images.shape[-2:])


def _adapt(dense, flow, trans, quat, scale, b: int, n: int) -> Any4DOutput:
    """The reference adaptors and the metric-scale application; inputs are per view (B·N, ...)."""
    hh, ww = dense.shape[1:3]
    s_map = jnp.repeat(scale, n)[:, None, None]  # per view (B·N, 1, 1); views are view-major within each clip
    rays = dense[..., :3] / jnp.clip(jnp.linalg.norm(dense[..., :3], axis=-1, keepdims=True), 1e-8)
    depth = jnp.exp(dense[..., 3])
    conf = 1.0 + jnp.exp(dense[..., 4])
    mask = jax.nn.sigmoid(dense[..., 5])
    quat = quat / jnp.clip(jnp.linalg.norm(quat, axis=-1, keepdims=True), 1e-8)
    rot = quaternion_to_rotation(quat)
    pts_cam = rays * depth[..., None]
    pts = (jnp.einsum("vij,vhwj->vhwi", rot, pts_cam) + trans[:, None, None]) * s_map[..., None]
    depth_m = depth * s_map
    trans_m = trans * s_map[:, :, 0]
    out = dict(
        rays=rays, depth_along_ray=depth_m, depth_z=ray_depth_to_z(depth_m, rays), pts3d_cam=pts_cam * s_map[..., None],
        cam_quats=quat, cam_trans=trans_m, c2w=pose_from_rotation_translation(rot, trans_m), pts3d=pts,
        scene_flow=flow * s_map[..., None], conf=conf, mask=mask,
    )
    # (B, N, ...): B over the batch axes when it divides them, else N over the devices. An uneven N (21 views on 8
    # devices) cannot stay sharded at the jit boundary, so such outputs leave replicated (~0.2 GiB at 336×518).
    out = {k: shard_tokens(v.reshape((b, n) + v.shape[1:])) for k, v in out.items()}
    return Any4DOutput(metric_scale=scale, **out)


def to_scene_geometry(outputs: Any4DOutput) -> SceneGeometry:
    """Any4DOutput → batched SceneGeometry: z-depth, pinhole intrinsics fitted to the rays, c2w, world points."""
    return SceneGeometry(
        c2w=outputs.c2w,
        intrinsics=intrinsics_from_rays(outputs.rays),
        depth=outputs.depth_z,
        points=outputs.pts3d,
        conf=outputs.conf,
        scene_flow=outputs.scene_flow,
    )
