"""Two local CPU processes join one jax.distributed job and form a single 8-device global mesh."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest


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


# ------------------------------------------------------------------------------------------------ GRPO on two hosts
from test_train import lgm_dir  # noqa: E402,F401  (the module's tiny saved LGM, a fixture)

WORKER = os.path.join(os.path.dirname(__file__), "helpers", "grpo_multihost_worker.py")


def _workers(num_processes: int, **spec) -> None:
    import json

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    port = _free_port()
    logs = [os.path.join(spec["out"], f"log_{i}.txt") for i in range(num_processes)]
    os.makedirs(spec["out"], exist_ok=True)
    procs = []
    for i in range(num_processes):
        with open(logs[i], "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, json.dumps({**spec, "port": port, "process_id": i,
                                                     "num_processes": num_processes})],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
    deadline = time.monotonic() + 1500
    while any(p.poll() is None for p in procs):  # one process failing leaves the others waiting at a collective
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(1.0)
    for p in procs:
        p.wait()
    for i, p in enumerate(procs):
        with open(logs[i]) as fh:
            assert p.returncode == 0, f"process {i} of {num_processes}:\n" + fh.read()[-5000:]


@pytest.mark.slow
def test_grpo_iteration_on_two_hosts_equals_one_host(lgm_dir, tmp_path):
    """One GRPO iteration on 2 processes × 4 CPU devices equals 1 process × 8 devices (same data 2 × fsdp 4 mesh):
    metrics and the whole train state (adapters, Adam moments, EMA) within 1e-6; each host reads its own half of
    every global batch; a checkpoint written on either topology restores on the other, exactly."""
    import json

    one, two = tmp_path / "one", tmp_path / "two"
    _workers(1, lgm_dir=lgm_dir, workdir=str(one / "w"), out=str(one), steps=2, restore_from="")
    _workers(2, lgm_dir=lgm_dir, workdir=str(two / "w"), out=str(two), steps=2, restore_from=str(one / "w"))
    back = tmp_path / "back"
    _workers(1, lgm_dir=lgm_dir, workdir=str(back / "w"), out=str(back), steps=0, restore_from=str(two / "w"))

    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        assert a.keys() == b.keys()
        for k in a:
            assert np.isclose(a[k], b[k], rtol=1e-6, atol=1e-6, equal_nan=True), (k, a[k], b[k])
    assert m1[-1]["train/kl"] > 0.0  # the second iteration ran with adapters the first one trained
    s1, s2 = np.load(one / "state.npz"), np.load(two / "state.npz")
    assert sorted(s1.files) == sorted(s2.files) and len(s1.files) > 3
    moved = 0
    for k in s1.files:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-6, atol=1e-6, err_msg=k)
        moved += int("lora_b" in k.lower() and np.abs(s1[k]).max() > 0)
    assert moved > 0, "no adapter moved: the comparison would be vacuous"
    # Resharding restores: 1-host checkpoint on 2 hosts, 2-host checkpoint on 1 host.
    r12, r21 = np.load(two / "restored.npz"), np.load(back / "restored.npz")
    for k in s1.files:
        np.testing.assert_array_equal(r12[k], s1[k], err_msg=k)
        np.testing.assert_array_equal(r21[k], s2[k], err_msg=k)
    assert int(r12["__iteration__"]) == int(r21["__iteration__"]) == 2

    # Prompts: host 0 and host 1 read disjoint halves of each global batch, which is the 1-host batch.
    single = json.loads((one / "prompts_0.json").read_text())
    h0, h1 = (json.loads((two / f"prompts_{i}.json").read_text()) for i in range(2))
    for b, (g, a, c) in enumerate(zip(single, h0, h1)):
        assert len(a) == len(c) == len(g) // 2
        assert a + c == g, (b, a, c, g)
        assert not set(a) & set(c)
    num_prompts, per_batch = 8, 2  # tests/test_train.py's _config: toyworld_count, rl.prompts_per_batch
    epoch = [i for batch in single[: num_prompts // per_batch] for i in batch]
    assert sorted(epoch) == list(range(num_prompts)), "an epoch reads every prompt once"
