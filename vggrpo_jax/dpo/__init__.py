"""The DPO baselines (Epipolar-DPO, VideoGPA): preference-pair generation (resumable) and, on the training layer,
the flow-matching DPO step. The loss itself is `rl.dpo`; the ranking scores are `evaluation`."""
