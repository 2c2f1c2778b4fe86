"""The toy geometry model: Any4D's architecture at 1.5 M parameters, trained on toyworld with exact ground truth.

    python -m vggrpo_jax.train_geometry --config=configs/geometry_toy.py --workdir=/tmp/geometry_toy

Input: 5 views of 56×56 (the RGB path's teacher size for 64×64 clips: 4×4 patches of 14 px). Sizes chosen on
measured throughput (benchmarks/geometry_toy.py). Each step takes 32 clips through the encoder, trunk and pose head
and 8 of them through the DPT heads (train.dense_batch_size): ≈ 0.93 s/step alone on this 2-core CPU (≈ 34 clips/s),
so 3000 steps take ≈ 47 min plus a 5–13 min compile. A quick run: --config.train.num_steps=20
--config.data.num_train=16 --config.data.num_heldout=8 --config.eval.num_clips=8 --config.train.eval_every=0
--config.train.batch_size=4 --config.train.dense_batch_size=2.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(
        encoder_dim=96, encoder_depth=2, encoder_heads=3, pos_grid=4,
        trunk_dim=96, trunk_depth=4, trunk_heads=4, tap_layers=(1, 2),
        dpt_feature_dim=32, dpt_layer_dims=(16, 32, 64, 96), pose_head_dim=128, scale_hidden_dim=64,
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="tfds", data_dir="", data_config="zoo", num_train=2048, num_heldout=128, image_size=56, num_views=5,
        strides=(4,), reverse_prob=0.0, augment_blur=0.5, augment_noise=0.02,
        mirror_prob=0.5,  # each training clip mirrored left–right with this probability (exact targets)
    ))  # the RGB path's views (frames 0, 4, …, 16), the only ones the rewards use. Measured with the pose-only probe
    # (tools/geometry_pose_probe.py, batch 8, lr 1e-3): with random strides (2, 3, 4) and reversal the held-out
    # rotation error stayed at the identity's 10.5° for 1200 steps; with these views it fell to 10.1° @1000, 9.1°
    # @2000, 8.3° @3000, 8.0° @5000–6000 (the bar is 2°: see the issue note)
    c.loss = ml_collections.ConfigDict(dict(
        points=1.0, depth=1.0, rays=1.0, trans=5.0, rot=50.0, scale=0.1, flow=1.0, mask=0.1, conf_alpha=0.2,
    ))  # pose ×5/×10: at 1/1 the pose head stayed at the identity for 750 steps (rotation error 10.7°, the identity's
    # 11.0°); overfitting 8 clips for 150 steps reaches 3.4° at 1/1 and 0.6° at 10/5. Pose-only probe, 3000 steps
    # (held-out rotation error): rot 10 → 8.3°, rot 50 → 7.7°, rot 200 → 7.6°; at rot 50 with batch 32 → 6.40°, 4.21° on
    # training clips (batch 8 stalls with train ≈ held-out). The full job with these (batch 32, 8 dense, mirror 0.5):
    # see the note below train.
    # The encoder's position table at the start: "normal" = DINOv2's N(0, 0.02²) draw, "sincos" = pos_scale × a 2-D
    # sine–cosine table (geometry_model.job.init_model). Pose-only probe at rot 50: 7.71° against 7.72° — no gain.
    c.init = ml_collections.ConfigDict(dict(pos="normal", pos_scale=0.5))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, schedule="cosine", warmup_steps=100, end_lr_fraction=0.05, weight_decay=1e-4,
        grad_clip=1.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=3000, batch_size=32, log_every=20, checkpoint_every=200, eval_every=500, eval_clips=32,
        profile_steps=0, max_consecutive_skips=10,  # stop with an error after this many skipped updates in a row
        dense_batch_size=8,  # clips per batch through the DPT heads (the rest train pose and scale only); 0 = all
    ))  # Held-out (32 clips) during the full run, step 500/1000/1500/2000: rotation 7.88/7.25/6.38/5.99° mean
    # (4.05/2.97/3.33/2.83° median), AbsRel 0.109/0.091/0.074/0.076; the earlier best full run (batch 8, rot 10, no
    # mirroring) ended at 10.26° and AbsRel 0.107.
    c.eval = ml_collections.ConfigDict(dict(
        num_clips=128, batch_size=8, mask_threshold=0.5, min_baseline=0.05,
        # The GRPO reward settings (config.base_config().rewards), r_geo at full resolution.
        reward=ml_collections.ConfigDict(dict(
            top_k=3, normalize=True, leave_one_out=True, use_scene_flow=True, flow_threshold=0.01,
            conf_quantile=0.1, stride=1,
        )),
    ))
    # Where the finished model is written (weights + manifest); "" = <workdir>/export.
    c.export = ml_collections.ConfigDict(dict(dir=""))
    return c
