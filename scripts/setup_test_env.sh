#!/usr/bin/env bash
# Installs vggrpo_jax with the PyTorch references used by the parity tests (CPU only).
set -euo pipefail
python -m pip install -q -e ".[test]"
# uniception's declared requirements pull torchvision/rerun and break the pinned torch: install it alone.
python -m pip install -q --no-deps "uniception==0.1.7"
