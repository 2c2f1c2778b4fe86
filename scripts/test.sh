#!/usr/bin/env bash
# The test command: CPU only, 8 simulated devices (set in tests/conftest.py), two workers.
# Tests marked `slow` (subprocess CLI runs, multi-process jobs) are deselected; VGGRPO_TEST_MARK= runs everything,
# VGGRPO_TEST_MARK=slow only those.
set -euo pipefail
exec python -m pytest -n 2 -q --durations=25 -m "${VGGRPO_TEST_MARK-not slow}" tests "$@"
