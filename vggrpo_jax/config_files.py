"""Config files and the paths written in them: a relative path in a config file means "relative to that file".

    configs/toy.py:   c.lgm.build_config = "lgm_zoo_quick.py"   → <dir of configs/toy.py>/lgm_zoo_quick.py, from any cwd
    command line:     --config.lgm.build_config=my/lgm.py        → my/lgm.py, relative to the working directory

Which config values are paths: the string leaves whose own key is in PATH_NAMES (`dit.checkpoint`,
`prompts.path`, `data.data_dir`, `export.dir`, …; the same names in every job's schema, tests/test_config_files.py
holds each schema's list). A value stays as written when it is empty, absolute, starts with "~", is "toyworld" (the
built-in prompt and data source) or carries a scheme prefix such as "zoo:<name>" (a shipped model) or "gs://".

Two ways in, one resolver (`resolve_paths`):
- `load_config_file("configs/toy.py[:arg]")` for code that loads a config file itself (the GRPO job's
  lgm.build_config, tests, benchmarks);
- `resolve_config_flag(FLAGS["config"])` for `--config=FILE` after absl parsed it (cli.parse_flags calls it for
  every entry point): the values that `--config.x=...` overrides set are left relative to the working directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Iterable

from vggrpo_jax.errors import PathNotFoundError

# Leaf names of the config keys that hold filesystem paths (files or directories), across every job's schema.
PATH_NAMES = frozenset({"checkpoint", "build_config", "tokenizer", "cache_dir", "path", "eval_path", "videos",
                        "data_dir", "dir", "text_dir"})
# Values of path keys that name something other than a file: the built-in toyworld source.
NOT_PATHS = frozenset({"", "toyworld"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # zoo:vae, gs://bucket, file://…


def is_relative_path(value: Any) -> bool:
    """True for a string that names a local path relative to some directory (see the module docstring)."""
    return (isinstance(value, str) and value not in NOT_PATHS and not os.path.isabs(value)
            and not value.startswith("~") and not _SCHEME.match(value))


def path_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the string leaves of `config` (a ConfigDict or mapping) whose leaf name is in PATH_NAMES."""
    out = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if hasattr(value, "items"):
            out += path_keys(value, dotted + ".")
        elif key in PATH_NAMES and isinstance(value, str):
            out.append(dotted)
    return out


def _node_and_leaf(config: Any, dotted: str) -> tuple[Any, str]:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    return node, leaf


def resolve_paths(config: Any, base_dir: str, keep: Iterable[str] = ()) -> list[str]:
    """Rewrites, in place, every relative path value of `config` (see `path_keys`, `is_relative_path`) to an
    absolute path under `base_dir`, except at the dotted keys in `keep` and below them. Returns the keys rewritten.

    Works on a locked ConfigDict (only existing keys are set).
    """
    keep = tuple(keep)
    base_dir = os.path.abspath(base_dir)
    done = []
    for dotted in path_keys(config):
        if any(dotted == k or dotted.startswith(k + ".") for k in keep):
            continue
        node, leaf = _node_and_leaf(config, dotted)
        if is_relative_path(node[leaf]):
            node[leaf] = os.path.normpath(os.path.join(base_dir, node[leaf]))
            done.append(dotted)
    return done


def split_spec(spec: str) -> tuple[str, list[str]]:
    """"file.py[:arg]" (ml_collections' config-file syntax) → (file, [arg] or [])."""
    path, *arg = spec.split(":", 1)
    return path, arg


def load_config_file(spec: str) -> Any:
    """get_config([arg]) of the config file `spec` ("path/x.py" or "path/x.py:arg"), with the relative paths written
    in it resolved against the file's directory. PathNotFoundError when the file does not exist."""
    path, arg = split_spec(spec)
    if not os.path.isfile(path):
        raise PathNotFoundError(f"config file {path!r}: no such file")
    module_spec = importlib.util.spec_from_file_location("_vggrpo_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(*arg)
    resolve_paths(config, os.path.dirname(os.path.abspath(path)))
    return config


def resolve_config_flag(flag: Any) -> list[str]:
    """For a parsed ml_collections config-file flag (`--config=FILE` + `--config.x=...`): resolves the relative paths
    written in FILE against FILE's directory, in place in the flag's value; the keys set by command-line overrides
    (and those below an overridden section) keep their values, relative to the working directory. Returns the keys
    rewritten."""
    from ml_collections import config_flags  # noqa: PLC0415

    path, _ = split_spec(config_flags.get_config_filename(flag))
    return resolve_paths(flag.value, os.path.dirname(os.path.abspath(path)),
                         keep=config_flags.get_override_values(flag))


__all__ = ["NOT_PATHS", "PATH_NAMES", "is_relative_path", "load_config_file", "path_keys", "resolve_config_flag",
           "resolve_paths", "split_spec"]
