from transformers import AutoTokenizer

from heedful.train.tokenizer import train_tokenizer

TEXTS = ["The vault code is 4821. Remember it.", "Alice met Bob at the station at noon.",
         "Numbers 0 1 2 3 4 5 6 7 8 9 and tags like KQ-42."] * 20


def test_tokenizer_round_trips_and_loads_with_autotokenizer(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=320, out_dir=tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token_id != loaded.eos_token_id
    for text in TEXTS[:3] + ["  unseen wörds, émojis 🙂 and\ttabs\nnew lines  ", ""]:
        ids = loaded(text, add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == text
        assert tok(text, add_special_tokens=False)["input_ids"] == ids
