"""The Latent Geometry Model: Any4D's tail stitched onto Wan VAE latents by a light connector.

    LGM(z) = Φ_{ℓ̂+1:L} ∘ S_ψ (z)      z: normalised latents (B, C, F', H', W') → SceneGeometry (B, N = F' views)

Modules (one idea each):
  correspondence  latent frame k ↔ video frames 4k−3..4k; view k stands for frame 4k (rule "last", configurable);
                  token grid = latent grid / connector stride; teacher frames resized to (14·h, 14·w)
  connector       S_ψ: one 5×5×5 conv, stride 1×2×2, padding 2 (the reported default) + optional residual blocks;
                  outputs the residual stream entering block ℓ, the hook-0 features and the taps below ℓ
  teacher         Φ run once with its features exposed; Φ_{ℓ+1:L} ∘ S_ψ (stitched forward)
  align           relative feature MSE (stitching) and per-modality L1 (alignment) losses
  data            calibration sources (toyworld, video directories, generated samples) and the sharded teacher cache
  loop            the resumable orbax-checkpointed training loop shared by both stages
  stitching       the search over ℓ (and connector variants) by held-out feature error; curve + plot
  finetune        alignment fine-tuning (connector, optionally the tail's LoRA adapters)
  model           the LGM callable; save/load (lgm.json + orbax connector/ and lora/)
  rgb_path        decode → pick → resize → Any4D: the baseline and evaluator
  evaluate        agreement (pose, depth AbsRel, reward Spearman) and robustness to latent noise
  config          defaults (the paper's recipe as reported by secondary sources, each a config option) + validation
  host_init       fast host-side random initialisation (connectors; random toy teachers)
Entry point: python -m vggrpo_jax.train_lgm --config=configs/lgm_wan21.py --workdir=DIR
"""
