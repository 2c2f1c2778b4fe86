"""VGGRPO on Wan2.2-TI2V-5B (48-channel latents, 16× VAE). Text-to-video use of the TI2V model."""

from vggrpo_jax.config import base_config


def get_config():
    c = base_config()
    c.dit.preset = "wan22_ti2v_5b"
    c.vae.preset = "wan22"
    # Wan2.2-TI2V-5B is trained at 704×1280; a reduced 352×640, 33-frame rollout keeps GRPO affordable.
    c.video.height, c.video.width, c.video.num_frames = 352, 640, 33
    c.video.fps = 24
    return c
