"""Entry-point plumbing shared by `python -m vggrpo_jax.<entry point>` and `tools/*.py`.

A user's mistake (a `vggrpo_jax.errors.UserError`, a bad flag, an unknown config key, a config file that does not
load) is printed as ONE line, `error: <message>`, on stderr, and the process exits with status 2. The traceback is
shown only with `--verbose`. Any other exception is a bug and propagates with its full traceback (exit status 1).

    tools:        sys.exit(cli.run(main))             main(argv) parses with cli.ArgumentParser (adds --verbose)
    config jobs:  cli.run_job(main)                   main(config, workdir): --config, --workdir, run_absl
    absl jobs:    cli.run_absl(main)                  instead of absl.app.run(main)

A config file's relative paths are resolved against the file's directory when the flags are parsed
(config_files.resolve_config_flag); `--config.x=...` overrides stay relative to the working directory.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Sequence

from vggrpo_jax import config_files
from vggrpo_jax.errors import OutputExistsError, PathNotFoundError, UserError, first_line, read_json

EXIT_USER_ERROR = 2


def _close_progress_bars() -> None:
    """Ends any open tqdm bar (it leaves its line with a newline), so the error starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        bar.close()


def fail(message: Any) -> NoReturn:
    """Prints `error: message` on stderr (on a line of its own) and exits with status 2."""
    _close_progress_bars()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a --verbose flag and one-line usage errors (exit status 2, like argparse's own)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true", help="show the Python traceback of an error")

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def require_path(path: str, flag: str) -> str:
    """`path` if it exists, else PathNotFoundError naming the flag ("--src /x: no such path")."""
    import os  # noqa: PLC0415

    if not os.path.exists(path):
        raise PathNotFoundError(f"{flag} {path}: no such path")
    return path


def require_new(path: str, flag: str, force: bool) -> str:
    """`path` unless it exists and `force` is off: then OutputExistsError naming the flag (checked before any work)."""
    import os  # noqa: PLC0415

    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{flag} {path}: already exists; pass --force to overwrite it")
    return path


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Calls a tool's main(argv); a UserError becomes one line and exit status 2 (re-raised under --verbose)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(main(argv) or 0)
    except UserError as err:
        if "--verbose" in argv:
            raise
        fail(err)


# ------------------------------------------------------------------------------------------------ absl jobs
def _config_flag_error(argv: Sequence[str], err: BaseException) -> str:
    """ml_collections raises AttributeError/KeyError "'name'" for an override of a key the config does not have."""
    key = str(err).strip("\"' ")
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and "." in name and key in name.split("."):
            return f"{name}: the config has no key {key!r} (overrides can only set keys the config file defines)"
    return f"unknown config key {key!r}"


def _flags_error(err: BaseException) -> str:
    text = str(err)
    if "Error whilst parsing config file" in text:  # ml_collections appends the config file's whole traceback
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        return f"config file failed to load: {lines[-1]}"
    return first_line(err)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors (exit status 2); also loads every config-file flag eagerly, since
    ml_collections defers a missing or broken config file to the first access of the config, and resolves the
    relative paths written in each config file against its directory (config_files.resolve_config_flag)."""
    from absl import flags  # noqa: PLC0415

    verbose = "--verbose" in argv
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as err:
        if verbose:
            raise
        fail(_flags_error(err))
    except (AttributeError, KeyError) as err:
        if verbose:
            raise
        fail(_config_flag_error(argv, err))
    for name in list(flags.FLAGS):
        value = flags.FLAGS[name].value
        if type(value).__name__ == "_ErrorConfig":  # ml_collections' stand-in for a config file that failed to load
            try:
                value.keys()
            except OSError as err:
                if verbose:
                    raise
                lines = [l.strip() for l in str(err).splitlines() if l.strip()]
                fail(f"--{name}: cannot load the config file: {lines[-1]}")
        elif name in _CONFIG_FILE_FLAGS and value is not None:
            config_files.resolve_config_flag(flags.FLAGS[name])
    return rest


def run_absl(main: Callable[[list[str]], Any]) -> None:
    """absl.app.run(main) with parse_flags and a --verbose flag: UserError → one line, exit status 2."""
    from absl import app, flags  # noqa: PLC0415

    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "show the Python traceback of a user error")

    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except UserError as err:
            if flags.FLAGS.verbose:
                raise
            fail(err)

    app.run(guarded, flags_parser=parse_flags)


_CONFIG_FILE_FLAGS: set[str] = set()  # the config-file flags job_flags defined: parse_flags resolves their paths


def job_flags() -> tuple[Any, Any]:
    """Defines --config (an ml_collections config file, "FILE[:arg]", with dotted overrides --config.x.y=...; locked,
    so an override of a key the file does not define fails) and --workdir; returns their two flag holders."""
    from absl import flags  # noqa: PLC0415
    from ml_collections import config_flags  # noqa: PLC0415

    config = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    _CONFIG_FILE_FLAGS.add(config.name)
    workdir = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and samples", required=True)
    return config, workdir


def run_job(main: Callable[[Any, str], Any], *, quiet_logs: bool = False) -> None:
    """The `if __name__ == "__main__"` of a config-driven job: defines --config and --workdir (job_flags), parses
    them and the entry point's own flags (defined at its module level) with one-line errors (run_absl), rejects
    positional arguments, then calls main(config, workdir) (exit status 0 when it returns).

    quiet_logs: absl logging at WARNING (orbax logs every checkpoint step at INFO; the progress bars are what a
    person reads)."""
    from absl import logging  # noqa: PLC0415

    config, workdir = job_flags()

    def call(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {argv[1:]} (settings are flags: --config.KEY=VALUE)")
        if quiet_logs:
            logging.set_verbosity(logging.WARNING)
        main(config.value, workdir.value)  # its result is not an exit status (absl would sys.exit() it)

    run_absl(call)


__all__ = ["ArgumentParser", "EXIT_USER_ERROR", "fail", "job_flags", "parse_flags", "read_json", "require_new",
           "require_path", "run", "run_absl", "run_job"]
