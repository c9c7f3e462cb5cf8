"""The session engine: one token stream, the person's marks, and a bounded KV cache.

A Session owns the stream (stream.py: every token's id and text, evicted ones too), the
pins, the drops and the cache of resident rows; how tokens get their rows and lose them is
its base, Encoder (encoding.py). This module holds the public operations. Every operation
is reported to the recorder before it takes effect, with text and regex targets resolved to
ranges.

Thread safety: operations take a lock, and `generate` holds it only while it computes one
token, so a UI thread can pin between two tokens of a stream.
"""

from __future__ import annotations

import contextlib
import threading
import time

import torch

from heedful.errors import BudgetError, HeedfulError, TargetError
from heedful.limits import MAX_GENERATE, MAX_INT, check_text
from heedful.selector.attention import register
from heedful.selector.autofold import AutoFold, compressor_for
from heedful.selector.cache import HeedfulCache
from heedful.selector.chat import CONTENT_SOURCES, MARKUP, ChatTemplate, Turn, has_template
from heedful.selector.chat import messages as chat_messages
from heedful.selector.chat import turns as chat_turns
from heedful.selector.compressor import digest as compressor_digest
from heedful.selector.config import SessionConfig, Stats, Token, facts_of, resolve, validate
from heedful.selector.encoding import Encoder
from heedful.selector.fold import Fold, Folding
from heedful.selector.gates import GateMonitor
from heedful.selector.policy import policy_for
from heedful.selector.recorder import NullRecorder, Recorder
from heedful.selector.rope import Rotary
from heedful.selector.sampling import Sampler
from heedful.selector.stream import TokenStream
from heedful.spans import Spans


class Session(Encoder, Folding):
    def __init__(self, model, tokenizer, *, recorder: Recorder | None = None, gated: bool | None = None,
                 config: SessionConfig | None = None, **settings):
        register()
        config = config or SessionConfig()
        if settings:
            config = config.replace(**settings)
        self.model, self.tokenizer = model, tokenizer
        self.template = ChatTemplate(tokenizer) if has_template(tokenizer) else None
        self.facts = facts_of(model, tokenizer, gated, self.template.end_of_turn_ids() if self.template else ())
        self.config = c = resolve(config, self.facts, digest=compressor_digest)
        self.gated = self.facts.gated
        self.max_positions = self.facts.max_positions
        self.sliding_window = self.facts.sliding_window
        if model.config._attn_implementation != "heedful":
            model.config._attn_implementation = "heedful"
        self.policy = policy_for(c)
        self.device = next(model.parameters()).device
        self.cache = HeedfulCache(model.config, Rotary.from_model(model), capacity=c.budget,
                                  max_positions=self.max_positions)
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self._lock = threading.RLock()
        self._waiting = 0  # operations waiting for the lock: a stream steps aside for them
        self._waiting_lock = threading.Lock()
        self._sampler = Sampler(c, c.seed)
        self._stops = frozenset(c.stop_ids)
        self.stream = TokenStream(tokenizer)
        self.resident_tokens: list[int] = []  # token index of each cache row, ascending
        self._pins = Spans()
        self._folds: dict[tuple[int, int], Fold] = {}
        self._autofold = AutoFold(c.fold_budget, c.fold_block, compressor_for(self)) if c.fold_budget else None
        self._dropped = Spans()
        self.next_logits: torch.Tensor | None = None
        self.last_attention: dict | None = None
        self.collect_attention = False
        self._generating = False
        self._evicted = 0
        self._peak = 0
        self._generated = 0
        self._gen_seconds = 0.0
        self.recorder.event("config", self.config.to_dict())

    # ------------------------------------------------------------------ reading
    @property
    def token_ids(self) -> list[int]:
        return self.stream.ids

    @property
    def token_texts(self) -> list[str]:
        return self.stream.texts

    @property
    def token_sources(self) -> list[str]:
        return self.stream.sources

    def __len__(self) -> int:
        return len(self.stream)

    def text(self, start: int = 0, end: int | None = None) -> str:
        return self.stream.text(start, end)

    def retained(self) -> list[int]:
        """Token indices whose KV rows are resident (a fold's gist rows are not tokens)."""
        with self._op():
            return [t for t in self.resident_tokens if type(t) is int]

    def pins(self) -> list[tuple[int, int]]:
        with self._op():
            return list(self._pins)

    def dropped(self) -> list[tuple[int, int]]:
        with self._op():
            return list(self._dropped)

    def watch_gates(self) -> None:
        """Starts reading the output gates (gated models): see `gate_mean`."""
        if getattr(self, "_gates", None) is None:
            self._gates = GateMonitor(self.model)

    @property
    def gate_mean(self) -> float | None:
        """Mean sigmoid gate of the newest token over layers and heads, once `watch_gates`
        has been called and a forward has run; None for ungated models."""
        g = getattr(self, "_gates", None)
        return g.mean() if g is not None else None

    def stream_bytes(self) -> int:
        """Bytes of RAM the stream's bookkeeping holds (ids, texts, sources, offsets; shared
        objects counted once). It grows with the stream (the text is kept for targets,
        rewind and the UI), while the KV cache does not."""
        with self._op():
            return self.stream.nbytes()

    def stats(self) -> Stats:
        with self._op():
            resident = set(self.resident_tokens)
            pinned = sum(1 for a, b in self._pins for t in range(a, b) if t in resident)
            return Stats(
                tokens=len(self.token_ids), generated=self._generated, resident=self.cache.resident(),
                peak_resident=self._peak, evicted=self._evicted,
                tokens_per_s=self._generated / self._gen_seconds if self._gen_seconds else 0.0,
                window=self.config.window, budget=self.config.budget, pinned=pinned,
                resident_bytes=self.cache.resident_bytes(), allocated_bytes=self.cache.allocated_bytes(),
            )

    def resolve(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Token ranges a target designates now (nothing is changed or logged)."""
        with self._op():
            return self.stream.resolve(target, occurrence)

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def _op(self):
        """The lock, for an operation. RLock is not fair: a stream that releases and
        re-takes it between tokens would starve a pin made from another thread, so an
        operation announces itself and the stream waits for it (`_yield_to_ops`)."""
        with self._waiting_lock:
            self._waiting += 1
        with self._lock:
            with self._waiting_lock:
                self._waiting -= 1
            yield

    def _yield_to_ops(self) -> None:
        while self._waiting:
            time.sleep(0.0005)

    # ------------------------------------------------------------------ the stream
    def _event(self, op: str, args: dict) -> None:
        if self._generating:
            args = {**args, "at": len(self.token_ids)}
        self.recorder.event(op, args)

    # ------------------------------------------------------------------ operations
    def prompt(self, text: str, pin=()) -> range:
        """Appends text to the stream and processes it; returns the new token indices.

        `pin`: targets pinned before the text is processed, so they are never evicted and
        nothing needs re-encoding: text (every occurrence) or a compiled regex (every match),
        both looked for in this prompt's text only, or (start, end) stream ranges (what the
        log records: {"op": "prompt", "text": ..., "pins": [[start, end], ...]})."""
        if not isinstance(text, str) or not text:
            raise TargetError("prompt: empty text")
        try:
            check_text("prompt", text)
        except ValueError as e:
            raise TargetError(str(e)) from None
        with self._op():
            ids = self.tokenizer(text, add_special_tokens=not self.token_ids)["input_ids"]
            if not ids:
                raise TargetError(f"prompt {text!r}: tokenizes to nothing")
            ids = list(ids)
            ranges = self.stream.resolve_ahead(ids, pin) if pin else []
            trial = self._pins.copy()
            for a, b in ranges:
                trial.add(a, b)
            self.policy.check_pins(trial, extra=self._gist_rows())
            self._event("prompt", {"text": text, **({"pins": [list(r) for r in ranges]} if ranges else {})})
            self._pins = trial
            return self._append_and_run(ids, "prompt")

    def say(self, text: str, role: str = "user", pin=()) -> range:
        """Appends a turn of the conversation, as the model's chat template writes it (chat.py):
        the markup and `text` as `role`'s content; a user turn ends with the assistant's
        header, so `generate` writes the reply and stops at the end of its turn. Logged as
        {"op": "say", "role": ..., "text": ...}. `pin`: as `prompt`'s, in this turn."""
        if not isinstance(text, str) or not text.strip():
            raise TargetError("say: empty text")
        try:
            check_text("say", text)
        except ValueError as e:
            raise TargetError(str(e)) from None
        if self.template is None:
            raise HeedfulError("say: this model's tokenizer has no chat template (talk to it with prompt: plain text)")
        with self._op():
            stops = self._stop_texts()
            history = chat_messages(self.stream.texts, self.stream.sources, stops)
            turn, a, b = self.template.turn(history, self.stream.text(), role, text, stops)
            ids, sources = self._tokenize_turn(turn, a, b, CONTENT_SOURCES[role])
            ranges = self.stream.resolve_ahead(ids, pin) if pin else []
            trial = self._pins.copy()
            for r in ranges:
                trial.add(*r)
            self.policy.check_pins(trial, extra=self._gist_rows())
            self._event("say", {"role": role, "text": text, **({"pins": [list(r) for r in ranges]} if ranges else {})})
            self._pins = trial
            return self._append_and_run(ids, sources)

    def _stop_texts(self) -> list[str]:
        return [self.tokenizer.decode([t]) for t in sorted(self._stops)]

    def _tokenize_turn(self, turn: str, a: int, b: int, source: str) -> tuple[list[int], list[str]]:
        """A turn's ids (tokenized whole, as the template's text would be) and each token's
        source: `source` for those within the content [a, b) (characters), else markup."""
        enc = self.tokenizer(turn, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        sources = [source if s < b and e > a else MARKUP for s, e in enc["offset_mapping"]]
        return ids, sources

    def turns(self) -> list[Turn]:
        """The conversation's turns: role and token range of each one's content."""
        with self._op():
            return chat_turns(self.stream.sources)

    def generate(self, n: int, *, stop_at_eos: bool = False):
        """Streams n new tokens (an iterator of Token). Other operations may be called
        between two tokens; closing the iterator early logs a `stop`."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_GENERATE:
            raise TargetError(f"-n {n!r}: must be an integer from 0 to {MAX_GENERATE:,}")
        if self.next_logits is None:
            raise HeedfulError("nothing to continue from: give a prompt first")
        return self._generate(n, stop_at_eos)

    def _generate(self, n: int, stop_at_eos: bool):
        with self._lock:
            self._event("generate", {"n": n, "stop_at_eos": stop_at_eos})
            self._generating = True
        produced = 0
        try:
            while produced < n:
                with self._lock:
                    t0 = time.perf_counter()
                    tid = self._sample()
                    index = len(self.token_ids)
                    self._run([index], [tid], evict=True)
                    record = self.stream.append(tid, "generated")
                    self.recorder.tokens([record])
                    self._generated += 1
                    self._gen_seconds += time.perf_counter() - t0
                produced += 1
                self._yield_to_ops()
                yield Token(index, tid, record.text, True)
                if stop_at_eos and tid in self._stops:
                    break
        finally:
            with self._lock:
                self._generating = False
                if produced < n:
                    self.recorder.event("stop", {"at": len(self.token_ids)})

    def _sample(self) -> int:
        return self._sampler(self.next_logits, self.stream.ids)

    SETTABLE = ("window", "budget", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")

    def set(self, **changes) -> dict:
        """Changes settings mid-session: window, budget and the sampling settings. A larger
        window keeps more of what comes next (evicted tokens do not return); a smaller one
        evicts at the next step. A new budget reallocates the KV buffers at once (a smaller one
        first evicts down to it, as the policy would). Logged as {"op": "set", ...} before it
        takes effect."""
        with self._op():
            unknown = sorted(set(changes) - set(self.SETTABLE))
            if unknown:
                raise HeedfulError(f"set: unknown setting(s) {', '.join(unknown)} (settable: {', '.join(self.SETTABLE)})")
            for name in ("window", "budget", "top_k"):
                value = changes.get(name, 0)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise BudgetError(f"set {name} {value!r}: must be an integer")
            floats = {k: float(v) for k, v in changes.items()
                      if k in ("temperature", "top_p", "min_p", "repetition_penalty") and isinstance(v, (int, float))
                      and not isinstance(v, bool)}
            trial = self.config.replace(**{**changes, **floats})
            try:
                validate(trial, self.facts)
            except HeedfulError as e:
                raise type(e)(f"set: {e}") from None
            policy = self.policy.resized(trial.window, trial.budget)
            policy.check_pins(self._pins, extra=self._gist_rows())
            if not changes:
                return {}
            self._event("set", dict(changes))
            self.config, self.policy = trial, policy
            self._sampler = self._sampler.retuned(trial)
            if trial.budget != self.cache.capacity:
                if self.cache.resident() > trial.budget:
                    self._cut_rows(policy.keep_rows(self.resident_tokens, len(self.token_ids), 0, self._kept()), "budget")
                self.cache.resize(trial.budget)
            return dict(changes)

    def _mark(self, op: str, target, occurrence, append: bool = False) -> list[tuple[int, int]]:
        """pin and recall share this: resolve, check the budget, log, then act. Tokens of the
        ranges that are not resident (evicted or dropped) are re-encoded in place; with
        `append`, a range that is not wholly resident is re-encoded as a pinned copy at the
        end of the stream instead (the behaviour before in-place re-encoding)."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            self._check_not_folded(op, ranges)
            resident = set(self.resident_tokens)
            whole = [all(t in resident for t in range(a, b)) for a, b in ranges]
            if append:
                copied = [t for (a, b), w in zip(ranges, whole) if not w for t in range(a, b)]
                new = [(len(self), len(self) + len(copied))] if copied else []
            else:
                copied, new = [], [r for r, w in zip(ranges, whole) if not w]
            trial = self._pins.copy()
            for a, b in [r for r, w in zip(ranges, whole) if w] + new:
                trial.add(a, b)
            self.policy.check_pins(trial, extra=self._gist_rows())
            if new and not append and self.cache.has_recurrent_layers:
                raise HeedfulError(f"{op} of evicted text in place needs a model whose layers are all full "
                                   "attention (linear-attention state cannot take it back): recall it with append")
            for a, b in ranges:
                self._event(op, {"range": [a, b], **({"append": True} if append else {})})
            if copied:
                for a, b in [r for r, w in zip(ranges, whole) if w]:
                    self._pins.add(a, b)
                self._pins.add(*new[0])
                self._append_and_run([self.token_ids[t] for t in copied], "recalled")
                return ranges
            self._pins = trial
            for a, b in ranges:
                self._dropped.remove(a, b)
            missing = [t for a, b in new for t in range(a, b) if t not in resident]
            if missing:
                self._reencode_in_place(missing)
            return ranges

    def _reencode_in_place(self, missing: list[int]) -> None:
        """Gives `missing` (sorted, now pinned) fresh rows at their place in the resident order:
        the resident set is cut to what the policy keeps with room for them, then they are
        re-encoded with the newest token, whose logits must see them."""
        n = len(self.stream)
        logits = self.next_logits
        self._cut_rows(self.policy.keep_rows(self.resident_tokens, n, 0, self._kept(), reserve=len(missing)),
                       "window")
        last = [] if n - 1 in self._dropped or n - 1 in missing else [n - 1]
        self._reencode(missing + last)
        if not last and n - 1 not in missing:  # the newest token is dropped: its logits stand
            self.next_logits = logits

    def pin(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Pins a target: kept however far the window moves. Pinning evicted (or dropped)
        tokens recalls them: re-encoded in place."""
        return self._mark("pin", target, occurrence)

    def recall(self, target, occurrence=None, *, append: bool = False) -> list[tuple[int, int]]:
        """Brings evicted text back, pinned: re-encoded in place, at its own position in the
        stream (`append`: as a copy at the end of the stream, source "recalled")."""
        return self._mark("recall", target, occurrence, append)

    def unpin(self, target, occurrence=None) -> list[tuple[int, int]]:
        with self._op():
            ranges = self.resolve(target, occurrence)
            for a, b in ranges:
                self._event("unpin", {"range": [a, b]})
            for a, b in ranges:
                self._pins.remove(a, b)
            return ranges

    def drop(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Forgets a target now, even inside the window (pins on it go too)."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            self._check_not_folded("drop", ranges)
            for a, b in ranges:
                self._event("drop", {"range": [a, b]})
            for a, b in ranges:
                self._pins.remove(a, b)
                self._dropped.add(a, b)
            self._cut_resident([t for t in self.resident_tokens if t not in self._dropped], "drop")
            return ranges

    def rewind(self, index: int) -> None:
        """Cuts the stream back to tokens [0, index), to regenerate from there. Pins past
        the cut go; window tokens that were freed are re-encoded, and so is the last token,
        so that the next-token logits are fresh."""
        with self._op():
            n = len(self.token_ids)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= n:
                raise TargetError(f"rewind {index!r}: must be an index in [0, {n}]")
            if self.cache.has_recurrent_layers:
                raise HeedfulError("rewind needs a model whose layers are all full attention "
                                   "(linear-attention state cannot be cut back)")
            self._event("rewind", {"index": index})
            last = index - 1
            for a, b in [span for span in self._folds if span[1] > max(last, 0)]:  # folds past the cut go
                del self._folds[(a, b)]
            if self._autofold is not None:  # summaries of blocks the re-read window reaches go
                self._autofold.cut(max(0, index - self.config.window))
            summaries = set(self._autofold.keys) if self._autofold is not None else set()
            self._cut_resident([t for t in self.resident_tokens if t < max(last, 0)
                                and (type(t) is int or t in summaries or any(a <= t < b for a, b in self._folds))],
                               "rewind")
            self.stream.truncate(index)
            self._sampler.forget()
            self._pins.clip(index)
            self._dropped.clip(index)
            self.next_logits = None
            if index == 0:
                return
            self._dropped.remove(last, index)
            resident = set(self.resident_tokens)
            lo = max(0, index - self.config.window)
            folded = self._folded()
            missing = [t for t in range(lo, index) if t not in resident and t not in self._dropped and t not in folded]
            self._reencode(missing)

    # ------------------------------------------------------------------ state for the store
    def state(self) -> dict:
        """What a store needs to rebuild this session: settings, pins and drops."""
        with self._op():
            return {"config": self.config.to_dict(), "pins": self.pins(), "dropped": self.dropped(),
                    "folds": [list(f) for f in self.folds()], "tokens": len(self.token_ids)}

    @classmethod
    def restore(cls, model, tokenizer, **kwargs) -> "Session":
        """Rebuilds a session from a store (restore.py)."""
        from heedful.selector.restore import restore

        return restore(cls, model, tokenizer, **kwargs)
