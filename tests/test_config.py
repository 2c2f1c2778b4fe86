"""Config files, dotted overrides through absl/ml_collections, and validation errors that name the key."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from vggrpo_jax.config import base_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(*argv):
    fv = flags.FlagValues()
    argv = ["prog", *argv]
    # config_flags pre-scans argv for the dotted override flags it must define (sys.argv by default).
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


@pytest.mark.parametrize("name", ["wan21.py", "wan22.py"])
def test_config_files_validate(name):
    validate(_parse(f"--config={ROOT}/configs/{name}"))


def test_dotted_override_applies():
    c = _parse(f"--config={ROOT}/configs/wan21.py", "--config.rl.group_size=8", "--config.video.num_frames=17")
    assert c.rl.group_size == 8 and c.video.num_frames == 17
    validate(c)


def test_unknown_key_fails_naming_it():
    with pytest.raises(Exception, match="group_sizee"):
        _parse(f"--config={ROOT}/configs/wan21.py", "--config.rl.group_sizee=8")


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("video.num_frames", 32, "video.num_frames=32: Wan needs 1 \\+ 4k"),
        ("rl.group_size", 1, "rl.group_size=1"),
        ("rl.noise_rule", "ddim", "rl.noise_rule='ddim': must be one of"),
        ("dit.preset", "wan3", "dit.preset"),
        ("optim.lr", -1.0, "optim.lr=-1.0"),
        ("rl.micro_batch_size", 5, "rl.micro_batch_size=5: must divide"),
        ("rewards.zbuffer", "atomic", "rewards.zbuffer=.atomic.: must be one of"),
    ],
)
def test_invalid_values_name_the_key(key, value, match):
    c = base_config()
    section, leaf = key.split(".")
    c[section][leaf] = value
    with pytest.raises(ValueError, match=match):
        validate(c)
