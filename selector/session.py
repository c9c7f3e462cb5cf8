"""The session engine: one token stream, the person's marks, and a bounded KV cache.

A Session holds, by composition, the state it is made of, each piece with one owner:

- the stream (stream.py: every token's id, text and source, evicted ones too);
- the person's marks: pins and drops (Spans, owned here) and folds (fold.py: Folds);
- the resident rows (residency.py: Residency owns their order and kinds, the KV cache, the
  retention policy, automatic fold and the attention path);
- the sampler (sampling.py) and the resolved, frozen config (config.py).

This module holds the public operations, their checks and their logging: every operation
is reported to the recorder before it takes effect, with text and regex targets resolved to
ranges, and an operation refused by a check changes nothing.

Thread safety: operations take a lock, and `generate` holds it only while it computes one
token, so a UI thread can pin between two tokens of a stream.
"""

from __future__ import annotations

import contextlib
import threading
import time

import torch

from heedful.errors import BudgetError, HeedfulError, TargetError
from heedful.limits import MAX_GENERATE, check_text
from heedful.selector.attention import register
from heedful.selector.autofold import compressor_for
from heedful.selector.chat import CONTENT_SOURCES, MARKUP, ChatTemplate, Turn, has_template
from heedful.selector.chat import messages as chat_messages
from heedful.selector.chat import turns as chat_turns
from heedful.selector.compressor import digest as compressor_digest
from heedful.selector.config import SessionConfig, Stats, Token, facts_of, resolve, validate
from heedful.selector.fold import Fold, Folds, check_gist, write_gist
from heedful.selector.gates import GateMonitor
from heedful.selector.policy import RetentionPolicy, policy_for
from heedful.selector.recorder import NullRecorder, Recorder
from heedful.selector.residency import Residency
from heedful.selector.rows import RowKind
from heedful.selector.sampling import Sampler
from heedful.selector.slots import CapacityError
from heedful.selector.stream import TokenStream
from heedful.spans import Spans


class Session:
    def __init__(self, model, tokenizer, *, recorder: Recorder | None = None, gated: bool | None = None,
                 config: SessionConfig | None = None, policy: RetentionPolicy | None = None,
                 attention: str | None = None, **settings):
        """`config` and `settings`: what was asked for (resolved against the model here,
        once). `policy`: a retention policy of one's own (a benchmark's baseline) instead of
        the config's. `attention`: auto, sdpa or triton (attention.path_for)."""
        register()
        config = config or SessionConfig()
        if settings:
            config = config.replace(**settings)
        self.model, self.tokenizer = model, tokenizer
        self.template = ChatTemplate(tokenizer) if has_template(tokenizer) else None
        self.facts = facts_of(model, tokenizer, gated, self.template.end_of_turn_ids() if self.template else ())
        self.config = c = resolve(config, self.facts, digest=compressor_digest)
        self.gated = self.facts.gated
        if model.config._attn_implementation != "heedful":
            model.config._attn_implementation = "heedful"
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.device = next(model.parameters()).device
        self.residency = Residency(model, c, self.facts, policy or policy_for(c),
                                   compressor=compressor_for(model, c, self.device) if c.fold_budget else None,
                                   attention=attention, on_evicted=self._evicted)
        self._lock = threading.RLock()
        self._waiting = 0  # operations waiting for the lock: a stream steps aside for them
        self._waiting_lock = threading.Lock()
        self._sampler = Sampler(c, c.seed)
        self._stops = frozenset(c.stop_ids)
        self.stream = TokenStream(tokenizer)
        self._pins = Spans()
        self._dropped = Spans()
        self._folds = Folds()
        self._gates: GateMonitor | None = None
        self.next_logits: torch.Tensor | None = None
        self._generating = False
        self._generated = 0
        self._gen_seconds = 0.0
        self.recorder.event("config", self.config.to_dict())

    def _evicted(self, ranges, reason: str) -> None:
        self.recorder.evicted(ranges, reason)

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

    @property
    def policy(self) -> RetentionPolicy:
        return self.residency.policy

    @property
    def cache(self):
        return self.residency.cache

    @property
    def last_attention(self) -> dict | None:
        """Per attention layer, the newest query's attention over the resident rows (by rank),
        after a forward with `collect_attention` on."""
        return self.residency.last_attention

    @property
    def collect_attention(self) -> bool:
        return self.residency.collect_attention

    @collect_attention.setter
    def collect_attention(self, on: bool) -> None:
        self.residency.collect_attention = bool(on)

    def __len__(self) -> int:
        return len(self.stream)

    def text(self, start: int = 0, end: int | None = None) -> str:
        return self.stream.text(start, end)

    def retained(self) -> list[int]:
        """Token indices whose KV rows are resident (a fold's gist rows are not tokens)."""
        with self._op():
            return self.residency.tokens()

    def rows(self) -> list[tuple]:
        """Every resident row in order: (order key, RowKind): a token's own row (its index),
        a fold's gist row, a summary row of automatic fold (rows.py)."""
        with self._op():
            return self.residency.rows.items()

    def pins(self) -> list[tuple[int, int]]:
        with self._op():
            return list(self._pins)

    def dropped(self) -> list[tuple[int, int]]:
        with self._op():
            return list(self._dropped)

    def folds(self) -> list[tuple[int, int, str]]:
        """The folded spans and their gists, in stream order."""
        with self._op():
            return self._folds.listed()

    def summary_rows(self) -> int:
        """Automatic fold's summary rows now resident (autofold.py)."""
        with self._op():
            return self.residency.summary_rows()

    def turns(self) -> list[Turn]:
        """The conversation's turns: role and token range of each one's content."""
        with self._op():
            return chat_turns(self.stream.sources)

    def watch_gates(self) -> None:
        """Starts reading the output gates (gated models): see `gate_mean`."""
        if self._gates is None:
            self._gates = GateMonitor(self.model)

    @property
    def gate_mean(self) -> float | None:
        """Mean sigmoid gate of the newest token over layers and heads, once `watch_gates`
        has been called and a forward has run; None for ungated models."""
        return self._gates.mean() if self._gates is not None else None

    def stream_bytes(self) -> int:
        """Bytes of RAM the stream's bookkeeping holds (ids, texts, sources, offsets; shared
        objects counted once). It grows with the stream (the text is kept for targets,
        rewind and the UI), while the KV cache does not."""
        with self._op():
            return self.stream.nbytes()

    def stats(self) -> Stats:
        with self._op():
            r, cache = self.residency, self.residency.cache
            resident = set(r.tokens())
            pinned = sum(1 for a, b in self._pins for t in range(a, b) if t in resident)
            return Stats(
                tokens=len(self.token_ids), generated=self._generated, resident=cache.resident(),
                peak_resident=r.peak, evicted=r.evicted,
                tokens_per_s=self._generated / self._gen_seconds if self._gen_seconds else 0.0,
                window=self.config.window, budget=self.config.budget, pinned=pinned,
                resident_bytes=cache.resident_bytes(), allocated_bytes=cache.allocated_bytes(),
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

    def _event(self, op: str, args: dict) -> None:
        if self._generating:
            args = {**args, "at": len(self.token_ids)}
        self.recorder.event(op, args)

    # ------------------------------------------------------------------ rows, through their owner
    def _kept(self) -> Spans:
        """What the person's marks keep besides sinks and the window: pins, and folded spans
        (where the gist rows sit). The residency adds its own summaries."""
        if not self._folds:
            return self._pins
        kept = self._pins.copy()
        for a, b in self._folds:
            kept.add(a, b)
        return kept

    def _gist_rows(self, without=()) -> int:
        """Fixed rows besides sinks and pins: the folds' gists and the automatic summaries' room."""
        return self._folds.gist_rows(without) + self.residency.reserved_rows()

    def _chunk(self) -> int:
        return max(1, min(self.config.prefill_chunk, self.config.window))

    def _append_and_run(self, ids: list[int], source: str | list[str]) -> range:
        """Appends tokens to the stream and encodes them, a chunk per forward. `source`: of
        every token, or a list, one for each."""
        start, step = len(self.stream), self._chunk()
        sources = [source] * len(ids) if isinstance(source, str) else source
        for a in range(0, len(ids), step):
            part = ids[a : a + step]
            first = len(self.stream)
            self.next_logits = self.residency.run(list(range(first, first + len(part))), part, self._kept(), evict=True)
            self.recorder.tokens([self.stream.append(tid, src) for tid, src in zip(part, sources[a : a + step])])
        return range(start, len(self.stream))

    def _reencode(self, missing: list, gist_ids: dict | None = None) -> None:
        """Re-encodes freed rows in place (Residency.reencode); `gist_ids`: the token id of each
        gist row's key (a fold's)."""
        ids, extra = self.stream.ids, gist_ids or {}
        logits = self.residency.reencode(missing, lambda k: extra[k] if k in extra else ids[k], self._kept(),
                                         self._chunk(), kinds=dict.fromkeys(extra, RowKind.GIST))
        if logits is not None:
            self.next_logits = logits

    def _reencode_in_place(self, missing: list[int]) -> None:
        """Gives `missing` (sorted, now pinned) fresh rows at their place in the resident order:
        the resident set is cut to what the policy keeps with room for them, then they are
        re-encoded with the newest token, whose logits must see them."""
        n = len(self.stream)
        logits = self.next_logits
        self.residency.cut_for(n, self._kept(), reserve=len(missing))
        last = [] if n - 1 in self._dropped or n - 1 in missing else [n - 1]
        self._reencode(missing + last)
        if not last and n - 1 not in missing:  # the newest token is dropped: its logits stand
            self.next_logits = logits

    def feed(self, ids: list[int], source: str = "prompt") -> range:
        """Appends token ids and encodes them without logging an event: for measurements that
        read the next-token logits after each (bench fold), never for a session a store keeps."""
        with self._op():
            return self._append_and_run(list(ids), source)

    # ------------------------------------------------------------------ text in
    def prompt(self, text: str, pin=()) -> range:
        """Appends text to the stream and processes it; returns the new token indices.

        `pin`: targets pinned before the text is processed, so they are never evicted and
        nothing needs re-encoding: text (every occurrence) or a compiled regex (every match),
        both looked for in this prompt's text only, or (start, end) stream ranges (what the
        log records: {"op": "prompt", "text": ..., "pins": [[start, end], ...]})."""
        _check_input("prompt", text)
        with self._op():
            ids = list(self.tokenizer(text, add_special_tokens=not self.token_ids)["input_ids"])
            if not ids:
                raise TargetError(f"prompt {text!r}: tokenizes to nothing")
            return self._take_in("prompt", {"text": text}, ids, "prompt", pin)

    def say(self, text: str, role: str = "user", pin=()) -> range:
        """Appends a turn of the conversation, as the model's chat template writes it (chat.py):
        the markup and `text` as `role`'s content; a user turn ends with the assistant's
        header, so `generate` writes the reply and stops at the end of its turn. Logged as
        {"op": "say", "role": ..., "text": ...}. `pin`: as `prompt`'s, in this turn."""
        _check_input("say", text)
        if not text.strip():
            raise TargetError("say: empty text")
        if self.template is None:
            raise HeedfulError("say: this model's tokenizer has no chat template (talk to it with prompt: plain text)")
        with self._op():
            stops = [self.tokenizer.decode([t]) for t in sorted(self._stops)]
            history = chat_messages(self.stream.texts, self.stream.sources, stops)
            turn, a, b = self.template.turn(history, self.stream.text(), role, text, stops)
            enc = self.tokenizer(turn, add_special_tokens=False, return_offsets_mapping=True)
            source = CONTENT_SOURCES[role]
            sources = [source if s < b and e > a else MARKUP for s, e in enc["offset_mapping"]]
            return self._take_in("say", {"role": role, "text": text}, list(enc["input_ids"]), sources, pin)

    def _take_in(self, op: str, args: dict, ids: list[int], sources, pin) -> range:
        """prompt and say: pins resolved in the new text and checked, logged, then encoded."""
        ranges = self.stream.resolve_ahead(ids, pin) if pin else []
        trial = self._pins.copy()
        for a, b in ranges:
            trial.add(a, b)
        self.policy.check_pins(trial, extra=self._gist_rows())
        self._event(op, {**args, **({"pins": [list(r) for r in ranges]} if ranges else {})})
        self._pins = trial
        return self._append_and_run(ids, sources)

    # ------------------------------------------------------------------ text out
    def generate(self, n: int, *, stop_at_eos: bool = False):
        """Streams n new tokens (an iterator of Token). Other operations may be called
        between two tokens; closing the iterator early logs a `stop`. `stop_at_eos`: the
        stream ends after a stop id (config.stop_ids: the end of a turn, end of text)."""
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
                    tid = self._sampler(self.next_logits, self.stream.ids)
                    index = len(self.token_ids)
                    self.next_logits = self.residency.run([index], [tid], self._kept(), evict=True)
                    # a turn's end is the template's markup (drawn dimmed, left out of exports' content)
                    end = self.template is not None and tid in self._stops
                    record = self.stream.append(tid, MARKUP if end else "generated")
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

    # ------------------------------------------------------------------ settings
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
            self.config = trial
            self._sampler = self._sampler.retuned(trial)
            self.residency.config = trial
            self.residency.resize(trial.budget, policy, len(self.token_ids), self._kept())
            return dict(changes)

    # ------------------------------------------------------------------ marks
    def _mark(self, op: str, target, occurrence, append: bool = False) -> list[tuple[int, int]]:
        """pin and recall share this: resolve, check the budget, log, then act. Tokens of the
        ranges that are not resident (evicted or dropped) are re-encoded in place; with
        `append`, a range that is not wholly resident is re-encoded as a pinned copy at the
        end of the stream instead (the behaviour before in-place re-encoding)."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            self._folds.check_not_folded(op, ranges)
            resident = set(self.residency.tokens())
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
            if new and not append and self.facts.recurrent:
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
            self._folds.check_not_folded("drop", ranges)
            for a, b in ranges:
                self._event("drop", {"range": [a, b]})
            for a, b in ranges:
                self._pins.remove(a, b)
                self._dropped.add(a, b)
            self.residency.cut_to([k for k in self.residency.rows.keys if k not in self._dropped], "drop")
            return ranges

    # ------------------------------------------------------------------ folds
    def fold(self, target, gist: str | None = None, occurrence=None) -> list[tuple[int, int]]:
        """Holds a resident span as a short gist (`gist`, or one the model writes): logged as
        {"op": "fold", "range": [a, b], "gist": ...} with the gist in force."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            if len(ranges) != 1:
                raise TargetError(f"fold: the target matches {len(ranges)} spans; fold one at a time")
            (a, b), n = ranges[0], len(self.stream)
            self._folds.check_not_folded("fold", ranges)
            if self._dropped.overlaps(a, b):
                raise TargetError(f"fold [{a}, {b}): overlaps dropped text")
            if b - a < 2:
                raise TargetError(f"fold [{a}, {b}): a single token has nothing to fold")
            resident = set(self.residency.tokens())
            if not all(t in resident for t in range(a, b)):
                raise TargetError(f"fold [{a}, {b}): the span must be resident to be read (recall it first)")
            if self.facts.recurrent:
                raise HeedfulError("fold needs a model whose layers are all full attention")
            if gist is None:
                gist = self._write_gist(a, b)
            ids = check_gist(a, b, gist, self.tokenizer)
            pins = self._pins.copy()
            pins.remove(a, b)
            self.policy.check_pins(pins, extra=self._gist_rows() + len(ids))
            if not self.residency.room_for(n, self._reading(a, b), len(ids)):
                raise BudgetError(f"fold [{a}, {b}): the gist is encoded while the span is still read, and the "
                                  f"budget ({self.config.budget}) cannot hold both with the pins and the window: "
                                  "fold a shorter span, or raise the budget")
            self._event("fold", {"range": [a, b], "gist": gist})
            self._pins = pins
            self._fold_in(a, b, Fold(gist, ids), n)
            return [(a, b)]

    def _reading(self, a: int, b: int) -> Spans:
        """What the marks keep, and the span [a, b) a fold's gist reads."""
        kept = self._kept().copy()
        kept.add(a, b)
        return kept

    def _fold_in(self, a: int, b: int, fold: Fold, n: int) -> None:
        """Encodes the gist after the resident span, then the span's rows leave; the newest
        token is re-encoded so that the next-token logits read the gist, not the span."""
        logits = self.next_logits
        if self.residency.cache.capacity - self.residency.resident() < len(fold.ids):
            self.residency.cut_for(n, self._reading(a, b), reserve=len(fold.ids))  # room for the gist
        gist_ids = self._folds.add(a, b, fold)
        self._reencode(list(gist_ids), gist_ids)
        rows = self.residency.rows
        self.residency.cut_to([k for k, kind in rows.items() if not (kind is RowKind.TOKEN and a <= k < b)], "fold")
        newest = n - 1
        if newest >= b and self.residency.index_of(newest) is not None:
            self._reencode([newest])
        elif newest >= b:  # the newest token is dropped: its logits stand
            self.next_logits = logits

    def unfold(self, target, occurrence=None) -> list[tuple[int, int]]:
        """Lets the gist of every fold the target touches go and re-encodes the original in
        place, pinned: {"op": "unfold", "range": [a, b]} per fold."""
        with self._op():
            ranges = self.resolve(target, occurrence)
            spans = self._folds.touching(ranges)
            if not spans:
                raise TargetError(f"unfold {ranges[0] if len(ranges) == 1 else ranges}: nothing folded there")
            pins = self._pins.copy()
            for fa, fb in spans:
                pins.add(fa, fb)
            self.policy.check_pins(pins, extra=self._gist_rows(without=spans))
            for fa, fb in spans:
                self._event("unfold", {"range": [fa, fb]})
            gone = set()
            for span in spans:
                gone |= self._folds.remove(span)
            self.residency.cut_to([k for k in self.residency.rows.keys if k not in gone], "unfold")
            self._pins = pins
            self._reencode_in_place([t for fa, fb in spans for t in range(fa, fb)])
            return spans

    def _write_gist(self, a: int, b: int) -> str:
        """A gist the model writes for the span, in a scratch session that records nothing."""
        rows = min(b - a + 32, self.facts.max_positions or b - a + 32)
        scratch = Session(self.model, self.tokenizer, gated=self.gated, window=rows, budget=rows, sinks=0)
        return write_gist(scratch, self.stream.text(a, b), a, b, self.tokenizer.eos_token_id, self.tokenizer)

    # ------------------------------------------------------------------ rewinds
    def rewind(self, index: int) -> None:
        """Cuts the stream back to tokens [0, index), to regenerate from there. Pins past
        the cut go; window tokens that were freed are re-encoded, and so is the last token,
        so that the next-token logits are fresh."""
        with self._op():
            n = len(self.token_ids)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= n:
                raise TargetError(f"rewind {index!r}: must be an index in [0, {n}]")
            if self.facts.recurrent:
                raise HeedfulError("rewind needs a model whose layers are all full attention "
                                   "(linear-attention state cannot be cut back)")
            self._event("rewind", {"index": index})
            last = index - 1
            self._folds.cut(index)
            self.residency.rewind(index, self.config.window, self._folds.holds)
            self.stream.truncate(index)
            self._sampler.forget()
            self._pins.clip(index)
            self._dropped.clip(index)
            self.next_logits = None
            if index == 0:
                return
            self._dropped.remove(last, index)
            resident = set(self.residency.tokens())
            lo = max(0, index - self.config.window)
            folded = self._folds.spans()
            missing = [t for t in range(lo, index) if t not in resident and t not in self._dropped and t not in folded]
            self._reencode(missing)

    # ------------------------------------------------------------------ the store
    def state(self) -> dict:
        """What a store needs to rebuild this session: settings, pins and drops."""
        with self._op():
            return {"config": self.config.to_dict(), "pins": self.pins(), "dropped": self.dropped(),
                    "folds": [list(f) for f in self.folds()], "tokens": len(self.token_ids)}

    @classmethod
    def restore(cls, model, tokenizer, *, config: SessionConfig | dict, token_ids: list[int],
                token_texts: list[str], token_sources: list[str], pins=(), dropped=(), folds=(),
                recorder: Recorder | None = None, gated: bool | None = None, attention: str | None = None):
        """Rebuilds a session from a store: the stream, pins and drops are set, and the
        retained set (sinks + pins + window, minus drops and folds) is re-encoded in one
        pass; then each fold (a, b, gist) reads its span again and keeps its gist. With
        automatic fold the tail streams through the window again, so its blocks are pooled
        by the session's compressor (the first window of the tail reads less than it first
        did: the summaries are close, not equal). Re-encoding gives those tokens fresh KV
        rows (each attends the retained tokens before it), which is not bit-identical to the
        rows they had when first processed. The recorder receives no config event and no
        tokens: the store has them."""
        if isinstance(config, dict):
            config = SessionConfig(**config)
        s = cls(model, tokenizer, config=config, recorder=NullRecorder(), gated=gated, attention=attention)
        with s._lock:
            s.stream.load(token_ids, token_texts, token_sources)
            s._pins, s._dropped = Spans(pins), Spans(dropped)
            c, n = s.config, len(s.stream)
            lo = max(0, n - c.window)
            folded = Spans((a, b) for a, b, _ in folds)
            keep = [t for t in range(n) if (t >= lo or s.policy.is_fixed(t, s._pins)) and t not in s._dropped
                    and t not in folded]
            try:
                if not c.fold_budget:
                    s._reencode(keep)
                else:  # the fixed rows before the tail (R blocks, a window before them, the window), then the tail
                    start = max(0, lo - c.fold_budget * c.fold_block - c.window) // c.fold_block * c.fold_block
                    s._reencode([t for t in keep if t < start])
                    tail = [t for t in range(start, n) if t not in s._dropped and t not in folded]
                    ids = s.stream.ids
                    logits = s.residency.restore_summaries(tail, lambda t: ids[t], s._kept(), s._chunk())
                    s.next_logits = logits if logits is not None else s.next_logits
                for a, b, gist in folds:  # the span returns to be read, then its gist replaces it
                    s._reencode(list(range(a, b)))
                    s._fold_in(a, b, Fold(gist, tuple(tokenizer(gist, add_special_tokens=False)["input_ids"])), n)
            except CapacityError:
                raise BudgetError(f"resume: the stored session does not fit these settings (budget {c.budget}, "
                                  f"window {c.window}, fold budget {c.fold_budget} x block {c.fold_block}): "
                                  "raise the budget or keep the stored settings") from None
            s.residency.peak = s.residency.resident()
        if recorder is not None:
            s.recorder = recorder
        return s


def _check_input(op: str, text) -> None:
    if not isinstance(text, str) or not text:
        raise TargetError(f"{op}: empty text")
    try:
        check_text(op, text)
    except ValueError as e:
        raise TargetError(str(e)) from None
