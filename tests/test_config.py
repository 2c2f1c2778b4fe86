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


def test_option_lists_are_the_implementations_own():
    """One source of truth: the config validates against the tuples the models / rl code itself checks, and every
    listed preset constructs."""
    from vggrpo_jax import config
    from vggrpo_jax.models.any4d.config import Any4DConfig
    from vggrpo_jax.models.wan.config import ATTENTION_KINDS, PRESETS, REMAT_POLICIES, WanConfig
    from vggrpo_jax.models.wan.vae_config import VAE_PRESETS, WanVAEConfig
    from vggrpo_jax.rl.sde import NOISE_RULES

    assert config.REMAT is REMAT_POLICIES and {"save_dots_no_batch", "save_qkv_attention"} <= set(config.REMAT)
    assert config.ATTENTION is ATTENTION_KINDS and config.NOISE_RULES is NOISE_RULES
    assert config.DIT_PRESETS is PRESETS and config.VAE_PRESETS is VAE_PRESETS
    for name in PRESETS:
        assert isinstance(WanConfig.preset(name), WanConfig)
    for name in VAE_PRESETS:
        assert isinstance(getattr(WanVAEConfig, name)(), WanVAEConfig)
    for name in config.ANY4D_PRESETS:
        assert isinstance(getattr(Any4DConfig, name)(), Any4DConfig)
    c = base_config()
    c.dit.remat_policy = "save_qkv_attention"
    validate(c)


def test_paths_in_config_files_resolve_relative_to_the_file(tmp_path, monkeypatch):
    """The README command works from any directory: configs/toy.py names lgm_toy.py next to itself."""
    import os

    from vggrpo_jax.backbones import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(tmp_path)
    c = load_config_file(os.path.join(root, "configs", "toy_random.py"))
    assert os.path.isabs(c.lgm.build_config) and os.path.isfile(c.lgm.build_config)


def test_the_readme_config_runs_on_the_shipped_zoo(tmp_path, monkeypatch):
    """configs/toy.py (the README main job) names the shipped zoo for every model, no random weights, and the LGM
    it builds first sits on the same zoo VAE and geometry model; from any directory."""
    import os

    from vggrpo_jax import zoo
    from vggrpo_jax.backbones import load_config_file
    from vggrpo_jax.config import validate
    from vggrpo_jax.lgm.config import validate_lgm

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(tmp_path)
    c = validate(load_config_file(os.path.join(root, "configs", "toy.py")))
    assert not c.allow_random_init
    assert (c.dit.checkpoint, c.text.checkpoint, c.vae.checkpoint, c.any4d.checkpoint) == (
        "zoo:dit", "zoo:text", "zoo:vae", "zoo:geometry")
    assert (c.video.num_frames, c.video.height, c.video.width) == zoo.VIDEO
    assert c.prompts.path == c.prompts.eval_path == "toyworld:zoo"
    lgm = validate_lgm(load_config_file(c.lgm.build_config))
    assert (lgm.vae.checkpoint, lgm.any4d.checkpoint) == (c.vae.checkpoint, c.any4d.checkpoint)
    assert (lgm.any4d.lora_rank, lgm.any4d.lora_alpha) == (c.any4d.lora_rank, c.any4d.lora_alpha)
    assert (lgm.data.num_frames, lgm.data.height, lgm.data.width) == zoo.VIDEO
