"""Text pipeline: local tokenizer loading, Wan's trim-and-zero-pad-to-512 convention (checked against diffusers'
WanPipeline._get_t5_prompt_embeds on the same tiny random encoder), the negative prompt, and the embedding cache."""

import types

import numpy as np
import pytest
import torch

from helpers.loading import load_script
from vggrpo_jax.convert import umt5 as conv
from vggrpo_jax.data.spm import train_sentencepiece_tokenizer
from vggrpo_jax.data.text import (
    MAX_LENGTH,
    EmbeddingCache,
    TextEncoder,
    clean_prompt,
    load_tokenizer,
    open_cache,
    pad_embeddings,
)

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

ATOL = 1e-5  # fp32 encoder vs transformers, after trimming and zero padding
CORPUS = [
    "a red fox jumps over the lazy dog in the snow",
    "the camera pans slowly across a mountain lake at sunrise",
    "a drone flies over a city at night with bright lights",
    "two people walk on a beach while waves crash on rocks",
    "a cat sleeps on a wooden table next to a window",
]
PROMPTS = [
    "  a red   fox jumps\tover the dog ",
    "the camera pans &amp; a drone flies",
    "",
    " ".join(CORPUS * 30),  # > 512 tokens: truncated
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny unigram sentencepiece model trained from the corpus, wrapped as a T5 tokenizer, save_pretrained."""
    return train_sentencepiece_tokenizer(CORPUS * 10, str(tmp_path_factory.mktemp("tok") / "tokenizer"), vocab_size=60)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def torch_encoder(tokenizer):
    torch.manual_seed(1)
    cfg = transformers.UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
    )
    return transformers.UMT5EncoderModel(cfg).eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, torch_encoder):
    path = tmp_path_factory.mktemp("enc")
    torch_encoder.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def text_encoder(tokenizer, hf_dir):
    model, fingerprint = conv.load_encoder(hf_dir)
    return TextEncoder(tokenizer, model, fingerprint, batch_size=4)


@pytest.fixture(scope="module")
def encoded(text_encoder):
    return text_encoder.encode(PROMPTS)


def test_load_tokenizer_local_only(tmp_path, tokenizer, tokenizer_dir):
    ids = tokenizer(["a red fox"])["input_ids"][0]
    assert ids[-1] == tokenizer.eos_token_id and len(ids) > 2
    with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
        load_tokenizer(tmp_path / "no_such_tokenizer")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path / "empty")


def test_matches_diffusers_wan_convention(tokenizer, torch_encoder, encoded):
    from diffusers import WanPipeline

    pipe = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=torch_encoder, _execution_device="cpu")
    with torch.no_grad():
        expected = WanPipeline._get_t5_prompt_embeds(
            pipe, PROMPTS, max_sequence_length=MAX_LENGTH, device="cpu", dtype=torch.float32
        ).numpy()
    embeddings, lengths = encoded
    assert embeddings.shape == (len(PROMPTS), MAX_LENGTH, 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, atol=ATOL)
    # the lengths count the EOS token; beyond them the rows are exactly zero
    expected_lengths = [len(tokenizer(clean_prompt(p))["input_ids"]) for p in PROMPTS[:3]] + [MAX_LENGTH]
    np.testing.assert_array_equal(lengths, expected_lengths)
    assert lengths[2] == 1  # "" is just EOS
    for row, n in zip(embeddings, lengths):
        assert np.all(row[n:] == 0) and np.all(np.abs(row[:n]).sum(-1) > 0)


def test_negative_embedding_is_the_empty_prompt(text_encoder, encoded):
    negative = text_encoder.negative_embedding()
    assert negative.shape == (MAX_LENGTH, 32)
    np.testing.assert_array_equal(negative, encoded[0][2])
    assert np.abs(negative[0]).sum() > 0 and np.all(negative[1:] == 0)


def test_sharded_text_encoder_matches(tokenizer, hf_dir, encoded):
    from vggrpo_jax.parallel import make_mesh

    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    model, fingerprint = conv.load_encoder(hf_dir, mesh=mesh)
    assert model.blocks.ffn.wi_0.kernel.get_value().sharding.spec[1] == "fsdp"
    sharded = TextEncoder(tokenizer, model, fingerprint, batch_size=4, mesh=mesh)
    embeddings, lengths = sharded.encode(PROMPTS)
    np.testing.assert_allclose(embeddings, encoded[0], atol=1e-5)
    np.testing.assert_array_equal(lengths, encoded[1])
    with pytest.raises(ValueError, match="not divisible"):
        TextEncoder(tokenizer, model, fingerprint, batch_size=6, mesh=mesh)


def test_left_padding_tokenizer_is_refused(tokenizer_dir, hf_dir):
    tok = load_tokenizer(tokenizer_dir)
    tok.padding_side = "left"
    model, fingerprint = conv.load_encoder(hf_dir)
    with pytest.raises(ValueError, match="padding_side"):
        TextEncoder(tok, model, fingerprint)


def test_cache_hit_miss_and_identity(tmp_path, tokenizer, hf_dir):
    model, fingerprint = conv.load_encoder(hf_dir)
    direct = TextEncoder(tokenizer, model, fingerprint, batch_size=4).encode(PROMPTS)

    cached = TextEncoder(tokenizer, model, fingerprint, cache=tmp_path, batch_size=4)
    first = cached.encode(PROMPTS)
    assert cached.encoder_batches == 1  # 4 distinct prompts, one batch
    assert cached.encode([" a red fox jumps over the dog"])[0][0, 0, 0] == first[0][0, 0, 0]  # same after cleaning
    assert cached.encoder_batches == 1
    second = cached.encode(PROMPTS + ["a cat sleeps"])  # one new prompt: one more batch
    assert cached.encoder_batches == 2
    np.testing.assert_array_equal(second[0][: len(PROMPTS)], first[0])
    np.testing.assert_allclose(first[0], direct[0], atol=1e-6)
    np.testing.assert_array_equal(first[1], direct[1])
    cached.encode(PROMPTS[::-1])
    assert cached.encoder_batches == 2  # all hits

    # cache-only reads (training without the encoder), keyed by the cleaned prompt
    cache = EmbeddingCache(tmp_path, cached.identity)
    emb, lengths = cache.load_batch(["a red fox jumps over the dog"])
    np.testing.assert_array_equal(emb[0], first[0][0])
    with pytest.raises(KeyError, match="never encoded"):
        cache.load_batch(["never encoded", PROMPTS[0]])

    # another checkpoint identity misses everything and writes elsewhere
    other = TextEncoder(tokenizer, model, fingerprint + "-finetuned", cache=tmp_path, batch_size=4)
    assert other.identity != cached.identity
    assert other.cache.missing(PROMPTS) == PROMPTS
    other.encode(PROMPTS[:2])
    assert other.encoder_batches == 1 and other.cache.dir != cached.cache.dir


def _load_tool(name):
    return load_script(f"tools/{name}.py")


def test_cache_tool_then_cache_only_reads(tmp_path, tokenizer_dir, hf_dir, torch_encoder, encoded):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('{"prompt": "a cat sleeps on a table", "split": "static"}\n{"prompt": "waves crash"}\n')
    cache_dir = tmp_path / "cache"
    tool = _load_tool("cache_text_embeddings")
    assert tool.main(["--prompts", str(prompts_file), "--tokenizer", tokenizer_dir, "--encoder", hf_dir,
                      "--out", str(cache_dir), "--batch-size", "4"]) == 0

    cache = open_cache(str(cache_dir), tokenizer_dir, hf_dir)  # no encoder loaded
    emb, lengths = cache.load_batch(["", "a cat sleeps on a table", "waves crash"])
    np.testing.assert_allclose(emb[0], encoded[0][2], atol=1e-6)  # the negative prompt was cached too
    assert emb.shape == (3, MAX_LENGTH, 32) and lengths[0] == 1

    # changing one weight of the checkpoint changes its fingerprint: the old entries are not used
    changed = tmp_path / "changed"
    with torch.no_grad():
        torch_encoder.encoder.final_layer_norm.weight[0] += 1.0
    try:
        torch_encoder.save_pretrained(str(changed))
    finally:
        with torch.no_grad():
            torch_encoder.encoder.final_layer_norm.weight[0] -= 1.0
    assert open_cache(str(cache_dir), tokenizer_dir, str(changed)).missing(["waves crash"]) == ["waves crash"]


def test_pad_embeddings_and_inputs():
    out, lengths = pad_embeddings([np.ones((3, 4)), np.full((1, 4), 2.0)], max_length=6)
    assert out.shape == (2, 6, 4) and list(lengths) == [3, 1]
    assert np.all(out[0, 3:] == 0) and np.all(out[1, 1:] == 0)
    with pytest.raises(ValueError, match="rows"):
        pad_embeddings([np.ones((7, 4))], max_length=6)
    with pytest.raises(ValueError, match="one width"):
        pad_embeddings([np.ones((2, 4)), np.ones((2, 5))])
    assert clean_prompt("  a&amp;amp;b \n\t c ") == "a&b c"


def test_filled_cache_serves_the_run_without_loading_the_encoder(tmp_path, tokenizer_dir, hf_dir, encoded, monkeypatch):
    """build_text_encoder with a complete cache never loads UMT5 (it would sit in HBM next to the DiT); with one
    prompt missing it loads the encoder as before."""
    from vggrpo_jax import backbones
    from vggrpo_jax.config import base_config
    from vggrpo_jax.data.text import CachedTextEncoder

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(PROMPTS[0] + "\n" + PROMPTS[1] + "\n")
    cache_dir = tmp_path / "cache"
    tool = _load_tool("cache_text_embeddings")
    assert tool.main(["--prompts", str(prompts_file), "--tokenizer", tokenizer_dir, "--encoder", hf_dir,
                      "--out", str(cache_dir), "--batch-size", "4", "--compute-dtype", "float32"]) == 0
    c = base_config()
    c.text.tokenizer, c.text.checkpoint, c.text.cache_dir, c.text.dtype = tokenizer_dir, hf_dir, str(cache_dir), "float32"

    loads = []
    real_load = conv.load_encoder
    monkeypatch.setattr(conv, "load_encoder", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    text = backbones.build_text_encoder(c, str(tmp_path), None, PROMPTS[:2])
    assert isinstance(text, CachedTextEncoder) and loads == []
    emb, lengths = text.encode(PROMPTS[:2])
    np.testing.assert_allclose(emb, encoded[0][:2], atol=1e-6)
    np.testing.assert_array_equal(lengths, encoded[1][:2])
    np.testing.assert_allclose(text.negative_embedding(), encoded[0][2], atol=1e-6)
    with pytest.raises(KeyError, match="not in the embedding cache"):
        text.encode_trimmed(["a prompt nobody cached"])

    # one corpus prompt missing: the encoder is loaded (and fills the cache), as without a cache
    text = backbones.build_text_encoder(c, str(tmp_path), None, PROMPTS[:2] + ["a prompt nobody cached"])
    assert isinstance(text, TextEncoder) and len(loads) == 1
