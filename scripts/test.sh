#!/usr/bin/env bash
# The test command: CPU only, 8 simulated devices (set in tests/conftest.py), two workers.
set -euo pipefail
exec python -m pytest -n 2 -q tests "$@"
