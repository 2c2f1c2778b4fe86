"""Thin entry points: every config-driven job's `__main__` is one cli.run_job call (--config, --workdir, one-line
user errors, no positional arguments); an entry point defines only its own further flags."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ["train", "train_lgm", "evaluate", "sample", "train_vae", "train_geometry", "finetune"]
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
# What cli.run_job owns: an entry point repeating any of it is the boilerplate this helper replaced.
OWNED = {"run_absl", "DEFINE_config_file", "job_flags", "UsageError", "set_verbosity"}


@pytest.mark.parametrize("path", [f"vggrpo_jax/{j}.py" for j in JOBS] + ["tools/guidance_sweep.py"])
def test_entry_point_main_is_cli_run_job(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
             if isinstance(n, (ast.Attribute, ast.Name))}
    assert not names & OWNED, f"{path} repeats cli.run_job's work: {sorted(names & OWNED)}"
    mains = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert len(mains) == 1, path
    calls = [ast.unparse(n.func) for n in ast.walk(mains[0]) if isinstance(n, ast.Call)]
    assert calls == ["cli.run_job"], f"{path}: __main__ calls {calls}"


def _run_job(*argv, body="print(c.seed, w); return {'not': 'an exit status'}"):
    code = f"from vggrpo_jax import cli\ndef main(c, w):\n    {body}\ncli.run_job(main)\n"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_run_job_calls_main_with_the_config_and_workdir(tmp_path):
    proc = _run_job("--config=configs/vae_toy.py", "--config.seed=7", f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"7 {tmp_path}"


@pytest.mark.parametrize("argv,status,message", [
    (["--config=configs/vae_toy.py", "--workdir=w", "stray"], 2, "error: unexpected arguments: ['stray']"),
    (["--config=configs/vae_toy.py"], 2, "error: flag --workdir=None"),
    (["--config=configs/vae_toy.py", "--config.nokey=1", "--workdir=w"], 2, "error: --config.nokey: the config has no"),
    (["--config=configs/none.py", "--workdir=w"], 2, "error: --config: cannot load the config file"),
])
def test_run_job_user_errors(argv, status, message):
    proc = _run_job(*argv, body="raise AssertionError('main must not run')")
    assert proc.returncode == status and message in proc.stderr, proc.stderr
