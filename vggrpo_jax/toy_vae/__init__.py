"""The toy VAE: Wan2.1's VAE architecture trained on toyworld (job.py), its data (data.py), metrics (metrics.py)
and the shipped format (export.py)."""
