"""heedful.learn: learning from recorded sessions what the person pins.

- `episodes.py`: recorded sessions to learn from, generated as replay scripts (recall
  episodes whose "person" pins the facts), in several arrangements; episode files for
  `heedful bench retention --episodes-file`.
- `labels.py`: a stored session's event log -> which tokens the person kept.
- `features.py`: the model's hidden states at chosen layers (forward hooks, plain forwards
  in windows).
- `picker.py`: the picker (a small head over hidden states scoring "the person would pin
  this"), its files, the model and tokenizer it was made for, word-aligned suggestions.
- `fit.py`: `heedful learn`: the dataset, the held-out split, training and its figures.
- `autopin.py`: pinning what the picker scores high while a session streams, within the
  budget (the oldest auto-pins leave first; the person's pins never).
- `lora.py`: a LoRA adapter (peft) that moves the model's own attention to what is pinned.

The engine knows nothing of this room: everything here drives a Session through its public
operations (prompt(text, pin=...), pin, unpin) and reads the model through forward hooks.
"""
