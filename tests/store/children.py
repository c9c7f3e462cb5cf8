"""Child processes for the crash and concurrency tests: python -m tests.store.children KIND ..."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def generate_forever(db: str, model_dir: str) -> None:
    """Generates into the store until killed, pinning and unpinning as it goes."""
    from heedful.models.loading import load_model
    from heedful.selector.session import Session
    from heedful.store import Store

    lm = load_model(model_dir, dtype="float32", device="cpu")
    store = Store.open(db)
    rec = store.new_session(title="crash", flush_tokens=5, flush_seconds=0.05)
    s = Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=8, budget=32)
    s.prompt("The vault code is 4821. Remember it.")
    s.pin("4821")
    for k, tok in enumerate(s.generate(1_000_000)):
        if k % 6 == 2:
            s.pin((tok.index - 1, tok.index + 1))
        elif k % 6 == 5:
            s.unpin((tok.index - 4, tok.index - 2))


def write_session(db: str, name: str, n: str) -> None:
    """Writes a synthetic session of n tokens with many small transactions."""
    from heedful.selector.recorder import TokenRecord
    from heedful.store import Store

    store = Store.open(db)
    rec = store.new_session(title=name, flush_tokens=16)
    rec.event("config", {"model": name, "window": 8, "sinks": 0})
    rec.event("prompt", {"text": name})
    for i in range(int(n)):
        rec.tokens([TokenRecord(i, i, f" {name}{i}", "generated")])
        if i % 50 == 49:
            rec.event("pin" if i % 100 == 49 else "unpin", {"range": [i - 1, i + 1]})
    rec.close()
    store.close()


if __name__ == "__main__":
    {"generate": generate_forever, "write": write_session}[sys.argv[1]](*sys.argv[2:])
