"""The DPO baselines (Epipolar-DPO, VideoGPA): resumable preference-pair generation (pairs.py) and the DPO training
job core on the training layer (train.py). The loss and update are `rl.dpo`; the ranking scores are `evaluation`."""
