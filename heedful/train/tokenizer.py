"""Byte-level BPE tokenizer trained with `tokenizers`, saved so `AutoTokenizer` loads it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from heedful.train.corpus import read_docs, read_episodes

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOS, PAD]
VOCAB_SIZE = 4096  # `heedful train`'s default (TrainConfig.vocab_size)
TOKENIZER_CHARS = 50_000_000  # the tokenizer learns from the first this many characters of train.txt


def tokenizer_texts(train_docs: list[str], episodes: list[dict], max_chars: int) -> list[str]:
    """What the tokenizer learns from: the head of train.txt (shuffled, so a sample of the
    whole) up to max_chars, and 2000 recall episodes."""
    texts, n = [], 0
    for d in train_docs:
        if n >= max_chars:
            break
        texts.append(d)
        n += len(d)
    return texts + [e["text"] for e in episodes[:2000]]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, out_dir: str | Path | None = None,
                    model_max_length: int = 256, min_frequency: int = 2):
    """Trains a byte-level BPE (GPT-2 style pre-tokenisation, so every byte string encodes and
    decodes losslessly) and returns a transformers PreTrainedTokenizerFast, saved to out_dir
    when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None,
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def main(argv=None) -> None:
    """python -m heedful.train.tokenizer CORPUS OUT [--vocab N]: the tokenizer `heedful train`
    would train on CORPUS, trained once and saved to OUT (pass it as --tokenizer OUT to every run
    that must share it; the device recipe trains it on the CPU beforehand)."""
    ap = argparse.ArgumentParser(prog="python -m heedful.train.tokenizer")
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=VOCAB_SIZE)
    ap.add_argument("--max-length", type=int, default=2048, help="model_max_length written to its config")
    a = ap.parse_args(argv)
    corpus = Path(a.corpus)
    texts = tokenizer_texts(read_docs(corpus / "train.txt"), read_episodes(corpus / "recall_train.jsonl"),
                            TOKENIZER_CHARS)
    tok = train_tokenizer(texts, a.vocab, a.out, model_max_length=a.max_length)
    print(f"tokenizer: {len(tok)} tokens, from {sum(map(len, texts)) / 1e6:.1f}M characters -> {a.out}")


if __name__ == "__main__":
    main()
