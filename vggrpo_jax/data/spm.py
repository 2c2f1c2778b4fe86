"""Training a small sentencepiece tokenizer (T5-style ids: pad 0, eos 1, unk 2) from text lines.

Used by toy runs, which have no downloaded UMT5 tokenizer, and by tests. The result is saved with transformers'
`save_pretrained`, so `data.text.load_tokenizer(out_dir)` loads it like a real tokenizer directory.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence


def train_sentencepiece_tokenizer(corpus: Sequence[str], out_dir: str, vocab_size: int = 96) -> str:
    """Trains a unigram sentencepiece model on `corpus` lines and writes a T5 tokenizer to `out_dir`; returns it.

    The vocabulary is a soft limit (small corpora cannot fill a large one). Raises ValueError on an empty corpus.
    """
    import sentencepiece as spm  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    lines = [line.strip() for line in corpus if line.strip()]
    if not lines:
        raise ValueError("train_sentencepiece_tokenizer: the corpus has no non-empty line")
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "corpus.txt")
        with open(text, "w") as fh:
            fh.write("\n".join(lines * max(1, 200 // len(lines))))
        raw = os.path.join(tmp, "raw")
        os.makedirs(raw)
        spm.SentencePieceTrainer.train(
            input=text, model_prefix=os.path.join(raw, "spiece"), vocab_size=vocab_size, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        )
        tokenizer = transformers.T5Tokenizer.from_pretrained(raw, extra_ids=0)
        # Write next to the destination, then rename: a crash never leaves a half-written tokenizer directory.
        staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)) or ".")
        tokenizer.save_pretrained(staging)
        os.replace(staging, out_dir)
    return out_dir
