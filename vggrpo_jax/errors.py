"""Exceptions for a user's mistakes: a bad config value, a missing path, an unreadable or malformed input file.

The entry points (vggrpo_jax/cli.py) print these as one line and exit with status 2; every other exception is a bug
and keeps its traceback. Each class also derives from the builtin a caller would catch (ValueError,
FileNotFoundError), so `except ValueError` code keeps working. A message always names what is wrong: the config key,
the file (and the line, for text files).
"""

from __future__ import annotations

import json
from typing import Any


class UserError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(UserError, ValueError):
    """A config value is invalid or inconsistent with another one; the message names the key(s)."""


class InputError(UserError, ValueError):
    """An input file exists but cannot be used (undecodable, truncated, malformed); the message names the file."""


class PathNotFoundError(UserError, FileNotFoundError):
    """A path the user gave does not exist; the message names it (and the config key or flag, when there is one)."""


class OutputExistsError(UserError, FileExistsError):
    """An output path already exists and the user did not ask to overwrite it (--force)."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors often append pages of context)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def read_json(path: str) -> Any:
    """A JSON file's content; a missing, non-UTF-8 or malformed file fails naming it (and the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


__all__ = ["UserError", "ConfigError", "InputError", "PathNotFoundError", "OutputExistsError", "first_line", "read_json"]
