"""The GRPO job: trainer.py (the three jitted stages of an iteration), evaluator.py (ODE samples scored by the LGM,
the RGB path and a pixel-space motion score), run.py (the resumable run on the training layer), aot.py (ahead-of-time
compilation of the stages on abstract shapes). Entry points: vggrpo_jax.train, vggrpo_jax.evaluate."""
