"""Prompt files: text and JSON-lines parsing, and errors that name the file and line."""

import json

import pytest

from vggrpo_jax.data.prompts import Prompt, PromptFileError, read_prompts


def test_text_file_skips_blank_and_comment_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\n\n  a red fox runs  \n   # indented comment\nthe camera pans left\n\n")
    assert read_prompts(path) == [Prompt("a red fox runs"), Prompt("the camera pans left")]


def test_jsonl_with_splits(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "a house", "split": "static"}, {"prompt": "a dog runs", "split": "dynamic"}, {"prompt": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_prompts(str(path)) == [Prompt("a house", "static"), Prompt("a dog runs", "dynamic"), Prompt("x")]


def test_missing_and_empty_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_prompts(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(PromptFileError, match="empty.txt"):
        read_prompts(empty)
    empty_jsonl = tmp_path / "e.jsonl"
    empty_jsonl.write_text("\n")
    with pytest.raises(PromptFileError, match="e.jsonl"):
        read_prompts(empty_jsonl)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "JSON object"),
        ('{"text": "wrong key"}', '"prompt"'),
        ('{"prompt": "   "}', '"prompt"'),
        ('{"prompt": "ok", "split": "moving"}', '"split"'),
    ],
)
def test_bad_jsonl_line_names_line_number(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + bad_line + "\n")
    with pytest.raises(PromptFileError, match=rf"bad\.jsonl:3: .*{message}"):
        read_prompts(path)
