"""Prompt files: plain text (one prompt per line) or JSON lines ({"prompt": ..., "split": "static"|"dynamic"}).

Text files: blank lines and lines whose first non-blank character is '#' are skipped; surrounding whitespace is
stripped; the split is None. JSON lines: blank lines are skipped; every other line must be an object with a non-empty
string "prompt" and optionally "split" in SPLITS (VGGRPO evaluates static- and dynamic-scene captions separately).
Every error names the file, and for JSON lines the 1-based line number.
"""

from __future__ import annotations

import dataclasses
import json
import os

from vggrpo_jax.errors import InputError, PathNotFoundError

SPLITS = ("static", "dynamic")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    split: str | None = None


class PromptFileError(InputError):
    """A prompt file is missing, empty or malformed; the message names the path (and line)."""


def _decode(path: str) -> str:
    """The file as UTF-8 text; a byte sequence that is not UTF-8 fails naming the file and its line."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PromptFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}; save the file as UTF-8)") from None


def _read_text(path: str) -> list[Prompt]:
    lines = _decode(path).splitlines()
    return [Prompt(s) for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _read_jsonl(path: str) -> list[Prompt]:
    prompts = []
    # Lines end at \n only (like reading the file): a JSON string may hold U+2028, which str.splitlines would split.
    for lineno, line in enumerate(_decode(path).replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{where}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise PromptFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
        text = record.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f'{where}: "prompt" must be a non-empty string, got {text!r}')
        split = record.get("split")
        if split is not None and split not in SPLITS:
            raise PromptFileError(f'{where}: "split" must be one of {SPLITS}, got {split!r}')
        prompts.append(Prompt(text.strip(), split))
    return prompts


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
    """All prompts of `path` (.jsonl/.ndjson as JSON lines, anything else as text), in file order.

    Raises FileNotFoundError for a missing file and PromptFileError for a file without prompts or a bad line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PathNotFoundError(f"prompt file not found: {path}")
    prompts = _read_jsonl(path) if path.lower().endswith(JSONL_SUFFIXES) else _read_text(path)
    if not prompts:
        raise PromptFileError(f"prompt file has no prompts: {path}")
    return prompts
