"""How tokens get their KV rows, and how rows leave: the forward half of a Session.

Each forward processes a chunk of new tokens after the retention policy has cut the
resident set (policy.py); the cache frees the slots of the tokens that left, and rows whose
compacted position changed are re-rotated before the next forward (cache.py, slots.py). Re-encoding gives freed tokens fresh rows at their own place in the
resident order, each attending to what is retained before it.

`Encoder` is the base of Session (session.py), which owns the state it works on: `model`,
`cache`, `policy`, `stream`, `resident_tokens` (the order key of each cache row, ascending:
a token's index, or for the rows of a fold's gist a fraction inside the folded span, see
fold.py), `_pins`, `_folds`, `recorder`, `config` and the counters.
"""

from __future__ import annotations

import torch

from heedful.selector.attention import AutoSelect, StepPlan
from heedful.selector.cache import cache_kwargs
from heedful.selector.config import SUM_ACROSS_RANKS
from heedful.selector.policy import rows_of
from heedful.spans import Spans, runs


def _arange(rows: Spans, device) -> torch.Tensor:
    """The row numbers of some spans, as one int64 tensor."""
    parts = [torch.arange(a, b) for a, b in rows]
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)).to(device)


class Encoder:
    def _kept(self) -> Spans:
        """What the policy keeps besides sinks and the window: pins, and folded spans (where
        the gist rows sit)."""
        if not self._folds and self._autofold is None:
            return self._pins
        kept = self._pins.copy()
        for a, b in [*self._folds, *(self._autofold.spans() if self._autofold else ())]:
            kept.add(a, b)
        return kept

    # ------------------------------------------------------------------ rows leaving
    def _cut_rows(self, keep: Spans, reason: str) -> None:
        """Frees the resident rows outside `keep` (row numbers). Slices and deletions, no
        per-token Python: this runs before every forward."""
        res = self.resident_tokens
        gaps = list(keep.complement(len(res)))
        if not gaps:
            return
        gone = [t for a, b in gaps for t in res[a:b] if type(t) is int]  # a gist's rows are no tokens
        pooling = self._autofold is not None and reason == "window"
        if pooling:  # what leaves with the window is folded into block summaries
            self._autofold.absorb(self, [r for a, b in gaps for r in range(a, b) if type(res[r]) is int])
        self.cache.keep(list(keep))
        for a, b in reversed(gaps):
            del res[a:b]
        self._evicted += len(gone)
        if gone:
            self.recorder.evicted(runs(gone), reason)
        if pooling:
            self._autofold.emit(self)

    def _cut_resident(self, keep: list[int], reason: str) -> None:
        """Frees the rows of resident tokens not in `keep` (a sorted subset)."""
        self._cut_rows(rows_of(self.resident_tokens, keep), reason)

    # ------------------------------------------------------------------ forwards
    def _plan(self, first_new: int, n_new: int) -> tuple[StepPlan, list[int]]:
        """Prepares the cache for a forward of n_new rows (cache.begin) and says what attention
        reads; returns the plan and the rows' position ids."""
        auto = None
        if self.config.auto_topk:
            base = self.policy.always_rows(self.resident_tokens, first_new, n_new, self._kept())
            pool = list(base.complement(len(self.resident_tokens)))
            if pool:
                auto = AutoSelect(
                    base_rows=_arange(base, self.device),
                    pool_start=pool[0][0], pool_end=pool[-1][1],
                    topk=self.config.auto_topk, block_size=self.config.block_size,
                    summary=self.config.auto_score, summaries=self.cache.summaries,
                )
                if getattr(self.policy, "wants_hits", False):  # the credit pool learns from the picks
                    auto.hits = torch.zeros(len(self.resident_tokens) + n_new + 1, device=self.device)
        step = self.cache.begin(n_new, self.device, order=auto is not None or self.collect_attention)
        if auto is not None:
            auto.stale_from = self.cache.stale_from
        return StepPlan(mask=step.mask, order=step.order, auto=auto,
                        collect={} if self.collect_attention else None), step.position_ids

    @torch.inference_mode()
    def _run(self, token_indices: list[int], ids: list[int], evict: bool) -> None:
        """One forward over a chunk of tokens that will sit after every resident row."""
        n = len(ids)
        if evict:
            # automatic fold's summaries arrive within the cut: their free rows stay free (auto
            # selection's pool would fill them)
            room = self._autofold.rows - len(self._autofold.keys) if self._autofold is not None else 0
            self._cut_rows(self.policy.keep_rows(self.resident_tokens, token_indices[0], n, self._kept(),
                                                 reserve=room), "window")
        plan, position_ids = self._plan(token_indices[0], n)
        try:
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                position_ids=position_ids,
                **cache_kwargs(self.model, self.cache),
                use_cache=True,
                logits_to_keep=1,
                heedful_plan=plan,
            )
        except BaseException:
            # a failure midway leaves some layers with the chunk's rows: forget them, so the
            # session stays usable (a recurrent layer's state cannot be rolled back)
            self.cache.abort()
            raise
        self.cache.commit()
        if plan.auto is not None:
            self.cache.summaries_refreshed()
        self.resident_tokens.extend(token_indices)
        self._peak = max(self._peak, self.cache.resident())
        logits = out.logits[0, -1]  # fp32 on the CPU for sampling; no op when it is already
        self.next_logits = logits if logits.dtype == torch.float32 and logits.device.type == "cpu" \
            else logits.float().cpu()
        self.last_attention = plan.collect
        observe = getattr(self.policy, "observe", None)  # policies that learn from attention (H2O)
        if observe is not None and plan.collect:
            observe(self.resident_tokens, plan.collect)
        observe = getattr(self.policy, "observe_selection", None)  # ... or from auto selection's picks
        if observe is not None:
            a, rows, counts = plan.auto, (), ()
            # tensor parallel: the picks of the heads on other ranks count too
            share = getattr(self.model, SUM_ACROSS_RANKS, None)
            if share is not None and a is not None and a.hits is not None:
                both = share(torch.cat([a.hits, a.hits.new_tensor([a.selections])]))
                a.hits, a.selections = both[:-1], int(both[-1])
            if a is not None and a.hits is not None and a.selections:
                h = a.hits[1 + a.pool_start : 1 + a.pool_end].cpu()
                rows = h.nonzero().flatten()
                rows, counts = rows.tolist(), (h[rows] / a.selections).tolist()
            observe(self.resident_tokens, n, (a.pool_start, a.pool_end) if a is not None else (0, 0), rows, counts)

    def _chunk(self) -> int:
        return max(1, min(self.config.prefill_chunk, self.config.window))

    def _append_and_run(self, ids: list[int], source: str | list[str]) -> range:
        """Appends tokens to the stream and encodes them, a chunk per forward. `source`: of
        every token, or a list, one for each."""
        start = len(self.stream)
        step = self._chunk()
        sources = [source] * len(ids) if isinstance(source, str) else source
        for a in range(0, len(ids), step):
            part = ids[a : a + step]
            first = len(self.stream)
            self._run(list(range(first, first + len(part))), part, evict=True)
            self.recorder.tokens([self.stream.append(tid, src) for tid, src in zip(part, sources[a : a + step])])
        return range(start, len(self.stream))

    # ------------------------------------------------------------------ re-encoding
    def _reencode(self, missing: list, gist_ids: dict | None = None) -> None:
        """Re-encodes freed tokens in place: rows after them are taken out and put back in
        order, so each re-encoded token attends what is retained before it. `gist_ids` gives
        the token id of order keys that are not stream tokens (a fold's gist, fold.py)."""
        if not missing:
            return
        first = missing[0]
        # rows from the first on are taken out (a resident token among `missing` is re-run, its
        # old row dropped) and put back in order between the re-encoded tokens
        after = [r for r, t in enumerate(self.resident_tokens) if t >= first]
        taken = self.cache.take(torch.tensor(after, dtype=torch.long, device=self.device)) if after else None
        detached = [self.resident_tokens[r] for r in after]
        if after:
            self.cache.truncate(after[0])
            del self.resident_tokens[after[0]:]
        order = sorted(set(missing) | set(detached))
        missing_set, run = set(missing), []
        pos_in_detached = {t: i for i, t in enumerate(detached)}
        ids, extra = self.stream.ids, gist_ids or {}

        def flush():
            step = self._chunk()
            for a in range(0, len(run), step):
                part = run[a : a + step]
                self._run(part, [extra[t] if t in extra else ids[t] for t in part], evict=False)
            run.clear()

        for t in order:
            if t in missing_set:
                run.append(t)
            else:
                flush()
                i = pos_in_detached[t]
                self.cache.put([(k[:, :, i : i + 1], v[:, :, i : i + 1]) for k, v in taken])
                self.resident_tokens.append(t)
        flush()
