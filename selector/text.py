"""Incremental detokenization: each token gets the text it adds to the stream.

Decoding one token alone loses context (SentencePiece drops a leading space, byte-level
BPE splits a character over several tokens), so each new token's text is the difference
between decoding a short tail with and without it. A token that ends inside a multi-byte
character gets "" and the token that completes it carries the character, so the texts of
all tokens concatenate to the decoded stream.
"""

from __future__ import annotations


def _rust_decoder(tokenizer):
    """The tokenizers library's own decode when transformers' `decode` would only wrap it (no
    clean-up asked): two of them run per generated token, and the wrapper's Python costs
    more than the decode (0.14 ms against a few µs, measured on `bench stream`'s tokenizer)."""
    try:
        from tokenizers import Tokenizer
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if isinstance(backend, Tokenizer) and type(tokenizer)._decode is TokenizersBackend._decode:
        return backend.decode
    return None


class Detokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._rust = _rust_decoder(tokenizer)
        self.ids: list[int] = []
        self.prefix = 0  # start of the tail already emitted, kept for context
        self.read = 0  # end of what has been emitted

    def _decode(self, ids: list[int]) -> str:
        if self._rust is not None:
            return self._rust(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, tid: int) -> str:
        self.ids.append(tid)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            if self.prefix > 64:  # only the tail from prefix on is decoded again: keep the list short
                del self.ids[: self.prefix]
                self.read -= self.prefix
                self.prefix = 0
            return after[len(before) :]
        return ""

    def fork(self) -> "Detokenizer":
        """An independent copy in the same state (to decode ahead without committing)."""
        other = Detokenizer(self.tokenizer)
        other.ids, other.prefix, other.read = list(self.ids), self.prefix, self.read
        return other

    def reset(self, ids: list[int]) -> None:
        """Continue after `ids` (after a rewind or a restore)."""
        self.ids = list(ids[-8:])
        self.read = len(self.ids)
        self.prefix = max(0, self.read - 1)
