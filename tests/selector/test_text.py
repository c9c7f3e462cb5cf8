"""Incremental detokenization: the pieces concatenate to the decoded stream, multi-byte
characters split over tokens included, and the decoder keeps only a short tail."""

from __future__ import annotations

from heedful.selector.text import Detokenizer

TEXT = "Plain words, then emoji 🙂👩‍👩‍👧 and 漢字の文 and שלום עולם. " * 12


def test_pieces_concatenate_to_the_decoded_stream(tiny_qwen35):
    tok = tiny_qwen35.tokenizer
    ids = tok(TEXT)["input_ids"]
    assert len(ids) > 300
    d = Detokenizer(tok)
    pieces = [d.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert "" in pieces or any(len(p.encode()) > 3 for p in pieces)  # multi-byte characters were met
    assert len(d.ids) <= 80  # a tail, not the whole stream
    # after a reset (rewind, restore) it continues as if it had seen everything
    d.reset(ids[:200])
    rest = [d.push(i) for i in ids[200:]]
    assert "".join(rest) == "".join(pieces[200:])
