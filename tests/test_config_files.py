"""Paths written in a config file are relative to that file; paths given on the command line are relative to the
working directory (config_files, applied by cli.parse_flags to every entry point's --config)."""

import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from vggrpo_jax import config_files
from vggrpo_jax.config_files import load_config_file, path_keys, resolve_config_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "toy_random.py")
LGM_TOY = os.path.join(ROOT, "configs", "lgm_toy.py")


def _parsed_flag(*argv):
    """--config parsed by absl + ml_collections as an entry point does; returns the flag (its value resolved)."""
    fv = flags.FlagValues()
    argv = ["prog", *argv]
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    resolve_config_flag(fv["config"])
    return fv["config"]


def test_toy_config_finds_its_lgm_config_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config_file(TOY)
    assert c.lgm.build_config == LGM_TOY
    # the same through the flags, with the config file named relative to the working directory
    monkeypatch.chdir(os.path.join(ROOT, "tests"))
    c = _parsed_flag("--config=../configs/toy.py").value
    assert c.lgm.build_config == os.path.join(ROOT, "configs", "lgm_zoo_quick.py")
    assert c.prompts.path == "toyworld:zoo" and c.dit.checkpoint == "zoo:dit"  # not paths: left as written


def test_command_line_paths_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flag = _parsed_flag(f"--config={TOY}", "--config.lgm.build_config=mine/lgm.py", "--config.text.tokenizer=tok")
    assert flag.value.lgm.build_config == "mine/lgm.py" and flag.value.text.tokenizer == "tok"


def test_relative_paths_written_in_a_file_resolve_against_it(tmp_path, monkeypatch):
    sub = tmp_path / "exp"
    sub.mkdir()
    (sub / "cfg.py").write_text(
        "from vggrpo_jax.config import base_config\n"
        "def get_config(arg='ckpt/dit'):\n"
        "    c = base_config()\n"
        "    c.dit.checkpoint, c.vae.checkpoint, c.any4d.checkpoint = arg, 'zoo:vae', '/abs/any4d'\n"
        "    c.text.tokenizer, c.text.cache_dir, c.prompts.eval_path = '~/tok', 'gs://bucket/cache', '../p.txt'\n"
        "    c.rl.noise_rule = 'sd3'\n"  # a string that is not a path
        "    return c\n")
    monkeypatch.chdir(tmp_path)
    for c in (load_config_file("exp/cfg.py:x/y"), _parsed_flag("--config=exp/cfg.py:x/y").value):
        assert c.dit.checkpoint == str(sub / "x" / "y")
        assert c.prompts.eval_path == str(tmp_path / "p.txt")
        assert (c.vae.checkpoint, c.any4d.checkpoint) == ("zoo:vae", "/abs/any4d")
        assert (c.text.tokenizer, c.text.cache_dir, c.rl.noise_rule) == ("~/tok", "gs://bucket/cache", "sd3")
    # an override of a whole section keeps everything under it as given
    flag = _parsed_flag("--config=exp/cfg.py", "--config.dit.checkpoint=d", "--config.prompts.eval_path=e")
    assert (flag.value.dit.checkpoint, flag.value.prompts.eval_path) == ("d", "e")
    with pytest.raises(config_files.PathNotFoundError, match=r"config file 'exp/none.py': no such file"):
        load_config_file("exp/none.py")


def _schemas():
    from vggrpo_jax.config import PATH_KEYS, base_config
    from vggrpo_jax.lgm.config import lgm_base_config
    from vggrpo_jax.sft.config import sft_base_config

    text = ["text.tokenizer", "text.checkpoint", "text.cache_dir"]
    return {
        "grpo": (base_config(), [*PATH_KEYS, "text.cache_dir"]),
        "lgm": (lgm_base_config(), ["vae.checkpoint", "any4d.checkpoint", "data.videos.path", "data.generated.path",
                                    "data.cache_dir"]),
        "sft": (sft_base_config(), ["dit.checkpoint", "vae.checkpoint", *text, "data.videos", "data.data_dir",
                                    "export.dir", "export.text_dir"]),
        "toy_vae": (load_config_file(os.path.join(ROOT, "configs", "vae_toy.py")), ["data.data_dir", "export.dir"]),
        "geometry": (load_config_file(os.path.join(ROOT, "configs", "geometry_toy.py")),
                     ["data.data_dir", "export.dir"]),
    }


@pytest.mark.parametrize("job", ["grpo", "lgm", "sft", "toy_vae", "geometry"])
def test_path_names_pick_exactly_each_schemas_paths(job):
    """PATH_NAMES is a naming rule: in every job's config the keys it picks are the path keys and nothing else."""
    config, expected = _schemas()[job]
    assert sorted(path_keys(config)) == sorted(expected)


def test_entry_point_resolves_against_the_config_file(tmp_path):
    """An entry point (cli.run_job, as `python -m vggrpo_jax.train_vae` runs it) started in another directory: the
    toy VAE config's data.data_dir written in FILE resolves next to FILE; given on the command line, it stays
    relative to the working directory."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "vae.py").write_text(
        f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'configs')!r})\nfrom vae_toy import get_config as base\n"
        "def get_config():\n    c = base()\n    c.data.data_dir = 'data'\n    return c\n")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for extra, expected in (([], str(tmp_path / "exp" / "data")), (["--config.data.data_dir=here"], "here")):
        proc = subprocess.run([sys.executable, "-c", "import sys; from vggrpo_jax import cli;"
                               "cli.run_job(lambda c, w: print('data_dir=' + c.data.data_dir))",
                               "--config=exp/vae.py", f"--workdir={tmp_path / 'w'}", *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"data_dir={expected}"
