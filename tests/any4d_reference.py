"""The PyTorch reference for Any4D parity tests, built offline from uniception 0.1.7 modules + transformers' DINOv2.

Any4D's own glue (fusion norm, scale token, the images-only forward and the output packing) is rebuilt here from the
facts in /work/shared/reference/any4d.md; every network block is the independent upstream implementation:
  DINOv2             transformers.Dinov2Model, with the position table resampled like the torch-hub DINOv2 Any4D
                     loads (F.interpolate bicubic, scale_factor (n + 0.1)/M, antialias off)
  trunk              uniception MultiViewAlternatingAttentionTransformerIFR
  dense / flow head  uniception DPTFeature + DPTRegressionProcessor (+ the adaptors)
  pose / scale head  uniception PoseHead / MLPHead (+ CamTranslationPlusQuatsAdaptor / ScaleAdaptor)
`state_dict()` returns the weights under Any4D's released key names, aliases and geometric-input encoders included.
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.spatial.transform import Rotation


def _import_uniception():
    # uniception.models.encoders imports perception_encoder → timm → torchvision (absent here): stub it out.
    name = "uniception.models.encoders.perception_encoder"
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.PerceptionEncoder = None
        stub.PerceptionEncoderIntermediateFeatureReturner = None
        sys.modules[name] = stub
    from uniception.models.encoders.dense_rep_encoder import DenseRepresentationEncoder
    from uniception.models.encoders.global_rep_encoder import GlobalRepresentationEncoder
    from uniception.models.info_sharing.alternating_attention_transformer import (
        MultiViewAlternatingAttentionTransformerIFR,
    )
    from uniception.models.info_sharing.base import MultiViewTransformerInput
    from uniception.models.prediction_heads import adaptors
    from uniception.models.prediction_heads.base import (
        AdaptorInput,
        PredictionHeadInput,
        PredictionHeadLayeredInput,
        PredictionHeadTokenInput,
    )
    from uniception.models.prediction_heads.dpt import DPTFeature, DPTRegressionProcessor
    from uniception.models.prediction_heads.mlp_head import MLPHead
    from uniception.models.prediction_heads.pose_head import PoseHead

    return types.SimpleNamespace(**locals())


U = _import_uniception()
INF = float("inf")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _hub_interpolate_pos_encoding(embeddings_module):
    """The torch-hub DINOv2 resampling (interpolate_offset 0.1, antialias off) in place of transformers' size-based one."""

    def interpolate(embeddings, height, width):
        pos = embeddings_module.position_embeddings
        npatch, n = embeddings.shape[1] - 1, pos.shape[1] - 1
        h0, w0 = height // 14, width // 14
        if npatch == n and h0 == w0:
            return pos
        m = int(math.sqrt(n))
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic", antialias=False)
        assert grid.shape[-2:] == (h0, w0)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)], 1)

    return interpolate


class ReferenceAny4D(nn.Module):
    """Images-only Any4D forward from upstream blocks; attribute names = the released checkpoint's prefixes."""

    def __init__(self, cfg, seed: int = 0):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(seed)
        self.cfg = cfg
        enc, dim = cfg.encoder_dim, cfg.trunk_dim
        self.dinov2 = Dinov2Model(Dinov2Config(
            hidden_size=enc, num_hidden_layers=cfg.encoder_depth, num_attention_heads=cfg.encoder_heads,
            mlp_ratio=int(cfg.encoder_mlp_ratio), image_size=cfg.pos_grid * cfg.patch_size, patch_size=cfg.patch_size,
            layer_norm_eps=cfg.norm_eps, qkv_bias=True, hidden_act="gelu", use_swiglu_ffn=False,
            attn_implementation="eager",
        )).eval()
        self.dinov2.embeddings.interpolate_pos_encoding = _hub_interpolate_pos_encoding(self.dinov2.embeddings)
        # Geometric-input encoders: present in the checkpoint, multiplied by zero in images-only mode.
        self.ray_dirs_encoder = U.DenseRepresentationEncoder("ray_dirs_encoder", 3, enc, apply_pe=False,
                                                             intermediate_dims=[8, 16, 32])
        self.depth_encoder = U.DenseRepresentationEncoder("depth_encoder", 1, enc, apply_pe=False,
                                                          intermediate_dims=[8, 16, 32])
        self.scene_flow_encoder = U.DenseRepresentationEncoder("scene_flow_encoder", 3, enc, apply_pe=False,
                                                               intermediate_dims=[8, 16, 32])
        for name, chans in (("depth_scale_encoder", 1), ("cam_rot_encoder", 4), ("cam_trans_encoder", 3),
                            ("cam_trans_scale_encoder", 1)):
            setattr(self, name, U.GlobalRepresentationEncoder(name, chans, enc, intermediate_dims=[8, 16]))
        self.fusion_norm_layer = nn.LayerNorm(enc, eps=1e-6)
        self.scale_token = nn.Parameter(0.02 * torch.randn(enc))
        self.info_sharing = U.MultiViewAlternatingAttentionTransformerIFR(
            name="aat", input_embed_dim=enc, depth=cfg.trunk_depth, dim=dim, num_heads=cfg.trunk_heads,
            indices=list(cfg.tap_layers), norm_intermediate=True, distinguish_ref_and_non_ref_views=True,
        )
        dims = [enc, dim, dim, dim]
        feat = dict(patch_size=cfg.patch_size, hooks=[0, 1, 2, 3], input_feature_dims=dims,
                    layer_dims=list(cfg.dpt_layer_dims), feature_dim=cfg.dpt_feature_dim)
        self.dpt_feature_head = U.DPTFeature(**feat)
        self.dpt_regressor_head = U.DPTRegressionProcessor(cfg.dpt_feature_dim, cfg.dense_channels)
        self.dense_head = nn.Sequential(self.dpt_feature_head, self.dpt_regressor_head)
        self.scene_flow_dpt_feature_head = U.DPTFeature(**feat)
        self.scene_flow_dpt_regressor_head = U.DPTRegressionProcessor(cfg.dpt_feature_dim, cfg.flow_channels)
        self.scene_flow_dense_head = nn.Sequential(self.scene_flow_dpt_feature_head, self.scene_flow_dpt_regressor_head)
        self.pose_head = U.PoseHead(patch_size=cfg.patch_size, input_feature_dim=dim, num_resconv_block=2)
        self.scale_head = U.MLPHead(input_feature_dim=dim, output_dim=1)
        self.dense_adaptor = U.adaptors.RayDirectionsPlusDepthWithConfidenceAndMaskAdaptor(
            name="dense", ray_directions_mode="linear", ray_directions_normalize_to_unit_sphere=True,
            ray_directions_normalize_to_unit_image_plane=False, ray_directions_vmin=-INF, ray_directions_vmax=INF,
            ray_directions_clamp_min_of_z_dir=False, ray_directions_z_dir_min=-INF, depth_mode="exp", depth_vmin=0,
            depth_vmax=INF, confidence_type="exp", confidence_vmin=1, confidence_vmax=INF)
        self.scene_flow_dense_adaptor = U.adaptors.SceneFlowAdaptor(name="flow", mode="linear", vmin=-INF, vmax=INF)
        self.pose_adaptor = U.adaptors.CamTranslationPlusQuatsAdaptor(
            name="pose", cam_trans_mode="linear", cam_trans_vmin=-INF, cam_trans_vmax=INF, quaternions_mode="linear",
            quaternions_normalize=True, quaternions_vmin=-INF, quaternions_vmax=INF)
        self.scale_adaptor = U.adaptors.ScaleAdaptor(name="scale", mode="exp", vmin=1e-8, vmax=INF)
        self._randomize(seed)
        self.eval()
        self.block_io: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for k, blk in enumerate(self.info_sharing.self_attention_blocks):
            blk.register_forward_hook(lambda mod, args, out, k=k: self.block_io.__setitem__(k, (args[0], out)))

    @torch.no_grad()
    def _randomize(self, seed: int) -> None:
        """Non-trivial norms, LayerScales and biases so that a swapped scale/bias or a dropped gamma shows."""
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in self.named_parameters():
            if name.endswith(("lambda1", "norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight",
                              "fusion_norm_layer.weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "position_embeddings" in name or "cls_token" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    # ---------------------------------------------------------------------------------------------- weights
    def state_dict_any4d(self) -> dict[str, torch.Tensor]:
        """Weights under the released Any4D key names (DINOv2 under encoder.model.* in torch-hub layout)."""
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("dinov2.")}
        d = self.dinov2.state_dict()
        hub = {"cls_token": d["embeddings.cls_token"], "mask_token": d["embeddings.mask_token"],
               "pos_embed": d["embeddings.position_embeddings"],
               "patch_embed.proj.weight": d["embeddings.patch_embeddings.projection.weight"],
               "patch_embed.proj.bias": d["embeddings.patch_embeddings.projection.bias"],
               "norm.weight": d["layernorm.weight"], "norm.bias": d["layernorm.bias"]}
        for i in range(self.cfg.encoder_depth):
            s = f"encoder.layer.{i}."
            a = s + "attention."
            hub.update({
                f"blocks.{i}.norm1.weight": d[s + "norm1.weight"], f"blocks.{i}.norm1.bias": d[s + "norm1.bias"],
                f"blocks.{i}.attn.qkv.weight": torch.cat([d[a + f"{x}_proj.weight"] for x in "qkv"], 0),
                f"blocks.{i}.attn.qkv.bias": torch.cat([d[a + f"{x}_proj.bias"] for x in "qkv"], 0),
                f"blocks.{i}.attn.proj.weight": d[a + "o_proj.weight"], f"blocks.{i}.attn.proj.bias": d[a + "o_proj.bias"],
                f"blocks.{i}.ls1.gamma": d[s + "layer_scale1.lambda1"], f"blocks.{i}.ls2.gamma": d[s + "layer_scale2.lambda1"],
                f"blocks.{i}.norm2.weight": d[s + "norm2.weight"], f"blocks.{i}.norm2.bias": d[s + "norm2.bias"],
                f"blocks.{i}.mlp.fc1.weight": d[s + "mlp.fc1.weight"], f"blocks.{i}.mlp.fc1.bias": d[s + "mlp.fc1.bias"],
                f"blocks.{i}.mlp.fc2.weight": d[s + "mlp.fc2.weight"], f"blocks.{i}.mlp.fc2.bias": d[s + "mlp.fc2.bias"],
            })
        sd.update({f"encoder.model.{k}": v for k, v in hub.items()})
        return {k: v.detach().clone() for k, v in sd.items()}

    # ---------------------------------------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """images (B, N, 3, H, W) in [0, 1] → stages and outputs as numpy, per view stacked to (B, N, ...)."""
        b, n, _, hh, ww = images.shape
        p = self.cfg.patch_size
        h, w = hh // p, ww // p
        views = [(images[:, i] - MEAN) / STD for i in range(n)]
        x = torch.cat(views, 0)  # view-major, as Any4D batches its views
        feats = self.dinov2(pixel_values=x).last_hidden_state[:, 1:]  # (N·B, T, C)
        fused = self.fusion_norm_layer(feats)
        fused_maps = fused.permute(0, 2, 1).reshape(n * b, -1, h, w)
        self.block_io.clear()
        final, inter = self.info_sharing(U.MultiViewTransformerInput(
            features=list(fused_maps.chunk(n, 0)),
            additional_input_tokens=self.scale_token.view(1, -1, 1).repeat(b, 1, 1)))
        hooks = [fused_maps, torch.cat(inter[0].features, 0), torch.cat(inter[1].features, 0),
                 torch.cat(final.features, 0)]
        head_in = U.PredictionHeadLayeredInput(list_features=hooks, target_output_shape=(hh, ww))
        dense = self.dense_adaptor(U.AdaptorInput(adaptor_feature=self.dense_head(head_in).decoded_channels,
                                                  output_shape_hw=(hh, ww)))
        flow = self.scene_flow_dense_adaptor(U.AdaptorInput(
            adaptor_feature=self.scene_flow_dense_head(head_in).decoded_channels, output_shape_hw=(hh, ww)))
        pose = self.pose_adaptor(U.AdaptorInput(
            adaptor_feature=self.pose_head(U.PredictionHeadInput(last_feature=hooks[3])).decoded_channels,
            output_shape_hw=(hh, ww))).value
        scale = self.scale_adaptor(U.AdaptorInput(
            adaptor_feature=self.scale_head(U.PredictionHeadTokenInput(
                last_feature=final.additional_token_features)).decoded_channels,
            output_shape_hw=(hh, ww))).value.squeeze(-1)  # (B, 1)

        value = dense.value.permute(0, 2, 3, 1)
        rays, depth = value[..., :3], value[..., 3:4]
        trans, quats = pose[:, :3], pose[:, 3:]
        rot = torch.from_numpy(Rotation.from_quat(quats.double().numpy()).as_matrix()).float()  # xyzw
        pts_cam = rays * depth
        pts = torch.einsum("vij,vhwj->vhwi", rot, pts_cam) + trans[:, None, None]
        s = scale.repeat(n, 1)  # per view (N·B, 1), view-major

        def per_view(t):  # (N·B, ...) view-major → (B, N, ...)
            return t.reshape((n, b) + t.shape[1:]).transpose(0, 1).numpy()

        out = dict(
            encoder=per_view(feats), hook0=per_view(fused),
            taps={k: per_view(torch.cat(f.features, 0).flatten(2).transpose(1, 2))
                  for k, f in zip(self.cfg.tap_layers, inter)},
            final_views=per_view(torch.cat(final.features, 0).flatten(2).transpose(1, 2)),
            final_scale_token=final.additional_token_features[..., 0].numpy(),
            rays=per_view(rays), depth_along_ray=per_view(depth[..., 0] * s[:, :, None]),
            pts3d_cam=per_view(pts_cam * s[:, :, None, None]), pts3d=per_view(pts * s[:, :, None, None]),
            cam_trans=per_view(trans * s), cam_quats=per_view(quats),
            scene_flow=per_view(flow.value.permute(0, 2, 3, 1) * s[:, :, None, None]),
            conf=per_view(dense.confidence[:, 0]), mask=per_view(dense.mask[:, 0]),
            metric_scale=scale[:, 0].numpy(),
            block_io={k: (i.numpy(), o.numpy()) for k, (i, o) in self.block_io.items()},
        )
        return out
