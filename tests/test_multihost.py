"""Two local CPU processes join one jax.distributed job and form a single 8-device global mesh."""

import os
import socket
import subprocess
import sys

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_form_one_global_mesh():
    port = str(_free_port())
    worker = os.path.join(os.path.dirname(__file__), "helpers", "multihost_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, worker, port, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    local = [np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * pid for pid in range(2)]
    expected = np.concatenate(local).sum(0)
    for out, _ in outs:
        line = [l for l in out.splitlines() if l.startswith("RESULT")][0]
        np.testing.assert_allclose(np.array(line.split()[1:], dtype=np.float32), expected)
