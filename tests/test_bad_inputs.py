"""Bad inputs get one clear error naming the key, file or line, before any work, and the CLIs print it as one line.

Three levels:
  * in process: config validation, prompt/video/checkpoint readers, and the tools' `main` run through `cli.run`
    (exit status 2 and the stderr line are what a user sees);
  * subprocesses of `python -m vggrpo_jax.{train,evaluate,train_lgm}` and `tools/*.py` where the CLI behaviour
    itself (flag parsing, exit status, --verbose traceback) is the point. Each costs a Python + JAX start (~4 s), so
    all but a few are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers.loading import load_script
from vggrpo_jax import cli
from vggrpo_jax.config import validate, validate_topology
from vggrpo_jax.errors import ConfigError, InputError, OutputExistsError, PathNotFoundError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _toy():
    from vggrpo_jax.config_files import load_config_file  # noqa: PLC0415  (its lgm.build_config: next to the file)

    return load_config_file(os.path.join(ROOT, "configs", "toy_random.py"))


def _lgm_toy():
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    try:
        from lgm_toy import get_config  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    return get_config()


def _set(c, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value


def _one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ config validation
CONFIG_CASES = [
    ("video.height", 72, r"config\.video\.height=72: must be a multiple of 16 .*e\.g\. 64 or 80"),
    ("video.width", 100, r"config\.video\.width=100: must be a multiple of 16"),
    ("video.num_frames", 1, r"config\.video\.num_frames=1: gives 1 latent frames .* need ≥ 3 .* use ≥ 9"),
    ("video.num_frames", 5, r"config\.video\.num_frames=5: gives 2 latent frames"),
    ("video.num_frames", 10, r"config\.video\.num_frames=10: Wan needs 1 \+ 4k frames"),
    ("rewards.top_k", 4, r"config\.video\.num_frames=9: gives 3 latent frames .* need ≥ 4"),
    ("optim.lr", float("nan"), r"config\.optim\.lr=nan: must be a finite number"),
    ("optim.b2", float("inf"), r"config\.optim\.b2=inf: must be a finite number"),
    ("rewards.weights.geo", float("nan"), r"config\.rewards\.weights\.geo=nan: must be a finite number"),
    ("rl.num_steps", 1, r"config\.rl\.num_steps=1: the SDE noise schedule needs ≥ 2"),
    ("rl.group_size", 1, r"config\.rl\.group_size=1: GRPO needs at least 2 samples"),
    ("rl.timestep_fraction", 0.1, r"config\.rl\.timestep_fraction=0\.1: .*trains no step"),
    ("dit.preset", "wan99", r"config\.dit\.preset='wan99': must be one of"),
    ("ema.decay", 1.0, r"config\.ema\.decay=1\.0: must be in \[0, 1\)"),
]


@pytest.mark.parametrize("key,value,message", CONFIG_CASES, ids=[f"{k}={v}" for k, v, _ in CONFIG_CASES])
def test_config_validation_names_the_key(key, value, message):
    c = _toy()
    _set(c, key, value)
    with pytest.raises(ConfigError, match=message):
        validate(c)


def test_zoo_checkpoint_of_the_wrong_kind_names_the_key():
    c = _toy()
    c.dit.checkpoint = "zoo:vae"
    with pytest.raises(ConfigError, match=r"config\.dit\.checkpoint='zoo:vae': this key takes the zoo's 'dit' model"):
        validate(c)


def test_lgm_toyworld_dataset_must_hold_the_configured_clip_shape():
    from vggrpo_jax.lgm.pipeline import build_sources

    c = _lgm_toy()  # 9-frame clips; the zoo's dataset holds 17-frame ones
    c.data.toyworld.dataset = "zoo"
    with pytest.raises(ConfigError, match=r"config\.data\.toyworld\.dataset='zoo' holds clips of 17×64×64; "
                                          r"data\.num_frames/height/width are 9×64×64"):
        build_sources(c)


@pytest.mark.parametrize("key", ["lgm.checkpoint", "prompts.path", "dit.checkpoint", "lgm.build_config"])
def test_config_paths_must_exist_before_any_work(key, tmp_path):
    c = _toy()
    _set(c, key, str(tmp_path / "nowhere"))
    with pytest.raises(PathNotFoundError, match=rf"config\.{re.escape(key)}='.*nowhere': no such path"):
        validate(c)


TOPOLOGY_CASES = [
    ({"fsdp": 16}, 1, {}, r"8 samples .* do not split over the 16 batch shards"),
    ({"fsdp": 2, "tensor": 4}, 1, {}, r"config\.mesh\.tensor=4: must divide the DiT's 2 attention heads"),
    ({"fsdp": 1, "context": 5}, 1, {}, r"config\.mesh\.context=5: must divide the DiT's 48 video tokens"),
    ({"fsdp": 2}, 4, {"rl.prompts_per_batch": 2}, r"config\.rl\.prompts_per_batch=2: must be divisible by the 4 hosts"),
    ({"fsdp": 4}, 1, {"text.batch_size": 6}, r"config\.text\.batch_size=6: must be divisible by the 4 batch shards"),
]


@pytest.mark.parametrize("mesh,hosts,overrides,message", TOPOLOGY_CASES)
def test_topology_validation(mesh, hosts, overrides, message):
    c = _toy()
    for k, v in overrides.items():
        _set(c, k, v)
    with pytest.raises(ConfigError, match=message):
        validate_topology(c, mesh, hosts)


def test_mesh_and_distributed_config_errors():
    from vggrpo_jax.parallel.mesh import initialize_distributed, mesh_shape

    with pytest.raises(ConfigError, match=r"8 devices are not divisible by the fixed axes"):
        mesh_shape({"data": 3, "fsdp": -1}, 8)
    with pytest.raises(ConfigError, match=r"distributed\.process_id=2 must be in \[0, distributed\.num_processes=2\)"):
        initialize_distributed({"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 2})


@pytest.mark.parametrize("key,value,message", [
    ("data.num_frames", 5, r"config\.data\.num_frames=5: gives 2 latent frames .* use ≥ 9"),
    ("data.height", 60, r"config\.data\.height=60: must be a positive multiple of the VAE stride 8"),
    ("align.optim.lr", float("nan"), r"config\.align\.optim\.lr=nan: must be a finite number"),
    ("any4d.checkpoint", "zoo:vae", r"config\.any4d\.checkpoint='zoo:vae': this key takes the zoo's 'geometry' model"),
    ("vae.checkpoint", "zoo:nope", r"config\.vae\.checkpoint='zoo:nope': the zoo has no model 'nope'"),
    ("any4d.checkpoint", "/nowhere/any4d.pth", r"config\.any4d\.checkpoint='/nowhere/any4d\.pth': no such path"),
    ("data.videos.path", "/nowhere/videos", r"config\.data\.videos\.path='/nowhere/videos': no such path"),
])
def test_lgm_config_validation(key, value, message):
    from vggrpo_jax.lgm.config import validate_lgm

    c = _lgm_toy()
    _set(c, key, value)
    with pytest.raises((ConfigError, PathNotFoundError), match=message):
        validate_lgm(c)


# ------------------------------------------------------------------------------------------------ input files
def test_prompt_files_name_the_file_and_line(tmp_path):
    from vggrpo_jax.data.prompts import read_prompts

    txt = tmp_path / "p.txt"
    txt.write_bytes("a calm lake\n# comment\nsnow \xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"{re.escape(str(txt))}:3: not UTF-8 text \(byte 0xe9"):
        read_prompts(txt)
    jl = tmp_path / "p.jsonl"
    jl.write_bytes(b'{"prompt": "ok"}\n\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=rf"{re.escape(str(jl))}:3: not UTF-8"):
        read_prompts(jl)
    jl.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(InputError, match=rf"{re.escape(str(jl))}:2: not valid JSON"):
        read_prompts(jl)
    with pytest.raises(PathNotFoundError, match="prompt file not found"):
        read_prompts(tmp_path / "none.txt")


def _garbage_video(path) -> str:
    rng = np.random.default_rng(0)
    path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return str(path)


def test_unreadable_video_is_one_line_without_ffmpeg_banner(tmp_path):
    from vggrpo_jax.data.video import read_video

    bad = _garbage_video(tmp_path / "bad.mp4")
    with pytest.raises(InputError) as info:
        read_video(bad)
    text = str(info.value)
    assert text.startswith(f"{bad}: cannot decode video"), text
    assert "\n" not in text and "configuration:" not in text and "built with" not in text, text


def _three_frame_video(directory) -> str:
    from vggrpo_jax.data.video import write_video

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "short.mp4")
    write_video(path, np.zeros((3, 3, 32, 32), np.float32), fps=8)
    return path


def test_short_video_in_calibration_directory_names_the_file(tmp_path):
    from vggrpo_jax.lgm.data import VideoDirectoryClips

    path = _three_frame_video(tmp_path / "videos")
    clips = VideoDirectoryClips(str(tmp_path / "videos"), num_frames=9, height=32, width=32)
    with pytest.raises(InputError, match=rf"{re.escape(path)}: fit_video: video has 3 frames, 9 are needed"):
        clips[0]
    with pytest.raises(PathNotFoundError, match=r"no such directory \(config\.data\.videos\.path\)"):
        VideoDirectoryClips(str(tmp_path / "none"), num_frames=9, height=32, width=32)


# ------------------------------------------------------------------------------------------------ tools, in process
def _tool(capsys, script: str, argv: list[str]) -> str:
    """Runs tools/<script>'s main through cli.run; asserts exit status 2 and one stderr line; returns that line."""
    module = load_script(f"tools/{script}")
    with pytest.raises(SystemExit) as info:
        cli.run(module.main, argv)
    assert info.value.code == 2
    return _one_line(capsys.readouterr().err)


def _truncated_safetensors(path) -> str:
    from safetensors.numpy import save_file

    save_file({"w": np.ones((64, 64), np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _truncated_pth(path) -> str:
    import torch

    torch.save({"model": {"w": torch.ones(64, 64)}}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def test_convert_wan_missing_source_says_no_such_path(capsys, tmp_path):
    line = _tool(capsys, "convert_wan.py", ["--src", "/nonexistent/wan", "--dst", str(tmp_path / "o")])
    assert line == "error: --src /nonexistent/wan: no such path"


def test_convert_wan_truncated_safetensors_names_the_file(capsys, tmp_path):
    src = _truncated_safetensors(tmp_path / "model.safetensors")
    line = _tool(capsys, "convert_wan.py", ["--src", src, "--preset", "tiny", "--dst", str(tmp_path / "o")])
    assert re.fullmatch(rf"error: {re.escape(src)}: not a readable safetensors file \(.*\); truncated download\?", line)


def test_convert_wan_bad_config_json_names_file_and_line(capsys, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{\n  "num_layers": 2,\n  oops\n}\n')
    src = _truncated_safetensors(tmp_path / "model.safetensors")
    line = _tool(capsys, "convert_wan.py", ["--src", src, "--config", str(cfg), "--dst", str(tmp_path / "o")])
    assert line.startswith(f"error: {cfg}:3: not valid JSON"), line


def test_convert_wan_existing_destination_needs_force(capsys, tmp_path):
    src = _truncated_safetensors(tmp_path / "model.safetensors")
    (tmp_path / "out").mkdir()
    line = _tool(capsys, "convert_wan.py", ["--src", src, "--preset", "tiny", "--dst", str(tmp_path / "out")])
    assert line == f"error: --dst {tmp_path / 'out'}: already exists; pass --force to overwrite it"


def test_convert_any4d_truncated_pth_is_reported_once(capsys, tmp_path):
    src = _truncated_pth(tmp_path / "any4d.pth")
    line = _tool(capsys, "convert_any4d.py", ["--checkpoint", src, "--config", "tiny", "--out", str(tmp_path / "o")])
    assert line == f"error: {src}: truncated or corrupt torch checkpoint (a zip archive without its central " \
                   "directory); download it again"


def test_convert_any4d_and_umt5_missing_checkpoint(capsys, tmp_path):
    # The converters' one flag scheme: --src / --dst (the old --checkpoint / --out still parse).
    line = _tool(capsys, "convert_any4d.py", ["--src", "/nonexistent.pth", "--dst", str(tmp_path / "o")])
    assert line == "error: --src /nonexistent.pth: no such path"
    line = _tool(capsys, "convert_umt5.py", ["--checkpoint", "/nonexistent", "--out", str(tmp_path / "o")])
    assert line == "error: --src /nonexistent: no such path"


def test_cache_text_embeddings_non_utf8_prompts(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"one\ntwo \xff\n")
    line = _tool(capsys, "cache_text_embeddings.py", ["--prompts", str(prompts), "--tokenizer", str(tmp_path),
                                                      "--encoder", str(tmp_path), "--out", str(tmp_path / "c")])
    assert line == f"error: {prompts}:2: not UTF-8 text (byte 0xff; save the file as UTF-8)"


def test_tool_usage_error_is_one_line(capsys, tmp_path):
    line = _tool(capsys, "convert_wan_vae.py", ["--dst", str(tmp_path / "o")])
    assert line.startswith("error: the following arguments are required: --src"), line


def test_a_bug_keeps_its_traceback_and_verbose_reraises(capsys):
    def buggy(argv):
        raise RuntimeError("a bug")

    def user(argv):
        raise InputError("x.txt:1: bad")

    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(buggy, [])
    with pytest.raises(InputError):
        cli.run(user, ["--verbose"])
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(PathNotFoundError, FileNotFoundError)
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, UserError)


# ------------------------------------------------------------------------------------------------ CLIs, subprocesses
def _run(args: list[str], cwd: str = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in ENV.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _job(module: str, config: str, workdir, *overrides: str) -> list[str]:
    return ["-m", f"vggrpo_jax.{module}", f"--config={os.path.join(ROOT, 'configs', config)}", f"--workdir={workdir}",
            *overrides]


def _assert_user_error(proc: subprocess.CompletedProcess, pattern: str, progress: bool = False) -> None:
    """Exit status 2 and the error as the one line on stderr; with `progress`, a job's progress bar may precede it
    (the error is then the last line, the only `error:` line, and there is no traceback or library noise)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    if progress:
        lines = [l.strip() for l in proc.stderr.replace("\r", "\n").splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
        for noise in ("Traceback", "configuration:", "os.fork", "Warning"):
            assert noise not in proc.stderr, proc.stderr[-3000:]
        line = errors[0]
    else:
        line = _one_line(proc.stderr)
    assert re.search(pattern, line), line


def test_train_cli_one_line_and_verbose_traceback(tmp_path):
    proc = _run(_job("train", "toy_random.py", tmp_path, "--config.video.height=72"))
    _assert_user_error(proc, r"^error: config\.video\.height=72: must be a multiple of 16")
    assert not os.path.exists(tmp_path / "lgm"), "validation must fail before any work"
    proc = _run(_job("train", "toy_random.py", tmp_path, "--config.video.height=72", "--verbose"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_tool_cli_truncated_pth_one_line(tmp_path):
    src = _truncated_pth(tmp_path / "any4d.pth")
    proc = _run([os.path.join(ROOT, "tools", "convert_any4d.py"), "--checkpoint", src, "--out", str(tmp_path / "o")])
    _assert_user_error(proc, rf"^error: {re.escape(src)}: truncated or corrupt torch checkpoint")


JOB_CASES = [
    ("train", "toy_random.py", ["--config.video.num_frames=1"], r"config\.video\.num_frames=1: gives 1 latent frames"),
    ("train", "toy_random.py", ["--config.optim.lr=nan"], r"^error: config\.optim\.lr=nan: must be a finite number$"),
    ("train", "toy_random.py", ["--config.optim.lr=abc"], r"flag --config\.optim\.lr=abc: could not convert"),
    ("train", "toy_random.py", ["--config.optim.nokey=1"], r"^error: --config\.optim\.nokey: the config has no key 'nokey'"),
    ("train", "nope.py", [], r"--config: cannot load the config file: .*No such file or directory: .*nope\.py"),
    ("train", "toy_random.py", ["--config.lgm.checkpoint=/nonexistent"], r"config\.lgm\.checkpoint='/nonexistent': no such"),
    ("evaluate", "toy_random.py", ["--config.optim.lr=inf"], r"^error: config\.optim\.lr=inf: must be a finite number$"),
    ("evaluate", "toy_random.py", [], r"^error: no checkpoint to evaluate in .*/w/checkpoints$"),
    ("train_lgm", "lgm_toy.py", ["--config.data.num_frames=5"], r"config\.data\.num_frames=5: gives 2 latent frames"),
]


@pytest.mark.slow
@pytest.mark.parametrize("module,config,overrides,pattern", JOB_CASES, ids=[f"{m}:{' '.join(o) or c}" for m, c, o, _ in JOB_CASES])
def test_job_cli_user_errors(module, config, overrides, pattern, tmp_path):
    _assert_user_error(_run(_job(module, config, tmp_path / "w", *overrides)), pattern)


@pytest.mark.slow
def test_train_cli_non_utf8_prompt_file(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a calm lake\nsnow \xe9 falls\n")
    proc = _run(_job("train", "toy_random.py", tmp_path / "w", f"--config.prompts.path={prompts}"))
    _assert_user_error(proc, rf"^error: {re.escape(str(prompts))}:2: not UTF-8 text")


@pytest.mark.slow
def test_train_lgm_cli_short_and_unreadable_videos(tmp_path):
    from vggrpo_jax.data.video import write_video

    def run(name):
        return _run(_job("train_lgm", "lgm_toy.py", tmp_path / f"w_{name}", "--config.data.toyworld.num_clips=0",
                         f"--config.data.videos.path={tmp_path / name}", "--config.data.heldout_fraction=0.5"))

    # Two 3-frame videos (one is held out): the first training clip cannot give 9 frames.
    for n in ("a", "b"):
        write_video(str(tmp_path / "short" / f"{n}.mp4"), np.zeros((3, 3, 32, 32), np.float32), fps=8)
    path = str(tmp_path / "short" / "a.mp4")
    _assert_user_error(run("short"), rf"^error: {re.escape(path)}: fit_video: video has 3 frames, 9 are needed$",
                       progress=True)
    # An undecodable file: one line, none of ffmpeg's banner.
    os.makedirs(tmp_path / "bad")
    _garbage_video(tmp_path / "bad" / "a.mp4")
    _garbage_video(tmp_path / "bad" / "b.mp4")
    proc = run("bad")
    _assert_user_error(proc, rf"^error: {re.escape(str(tmp_path / 'bad' / 'a.mp4'))}: cannot decode video",
                       progress=True)
    assert "configuration:" not in proc.stderr


@pytest.mark.slow
def test_tool_cli_missing_source(tmp_path):
    proc = _run([os.path.join(ROOT, "tools", "convert_wan.py"), "--src", "/nonexistent", "--dst", str(tmp_path / "o")])
    _assert_user_error(proc, r"^error: --src /nonexistent: no such path$")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"num_layers": 1}) + "\n{")
    proc = _run([os.path.join(ROOT, "tools", "convert_wan_vae.py"), "--src", str(tmp_path), "--config", str(cfg),
                 "--dst", str(tmp_path / "o")])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(cfg) in _one_line(proc.stderr)
