"""The resident rows and how they change: the owner of what the model can attend.

`Residency` holds the rows' order and kinds (rows.py), the KV cache whose slots hold them
(cache.py), the retention policy that chooses which stay (policy.py), automatic fold's
summaries (autofold.py) and the attention path (attention.py). Before each forward of new
tokens it cuts the rows to what the policy keeps: the slots of the tokens that left are
freed, what leaves with the window is pooled into summaries, and rows whose compacted
position changed are re-rotated when the forward is planned. Re-encoding gives freed tokens
fresh rows at their own place in the order, each attending what is resident before it.

It knows nothing of the person's marks: the session passes what must be kept besides sinks
and the window (`kept`: pins, folded spans) and reads back the next-token logits.
"""

from __future__ import annotations

import bisect

import torch

from heedful.selector.attention import AutoSelect, StepPlan, path_for
from heedful.selector.autofold import AutoFold
from heedful.selector.cache import HeedfulCache, cache_kwargs
from heedful.selector.config import SUM_ACROSS_RANKS
from heedful.selector.policy import RetentionPolicy, rows_of
from heedful.selector.rope import Rotary
from heedful.selector.rows import RowKind, Rows
from heedful.selector.static import static_for
from heedful.spans import Spans, runs


def _arange(rows: Spans, device) -> torch.Tensor:
    """The row numbers of some spans, as one int64 tensor."""
    parts = [torch.arange(a, b) for a, b in rows]
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)).to(device)


class Residency:
    def __init__(self, model, config, facts, policy: RetentionPolicy, *, compressor=None, attention: str = "auto",
                 on_evicted=None):
        self.model, self.config = model, config
        self.device = next(model.parameters()).device
        self.cache = HeedfulCache(model.config, Rotary.from_model(model), capacity=config.budget,
                                  max_positions=facts.max_positions)
        self.rows = Rows()
        self.policy = policy
        self.autofold = AutoFold(config.fold_budget, config.fold_block, compressor) if config.fold_budget else None
        self.path = path_for(attention, self.device)
        self.static = static_for(model, self.cache)  # --cuda-graph: the padded decode step, captured on CUDA
        self.on_evicted = on_evicted or (lambda ranges, reason: None)
        self.collect_attention = False  # the newest query's attention per layer (UI heat, H2O)
        self.last_attention: dict | None = None
        self.evicted = 0  # tokens whose rows were freed, in all
        self.peak = 0

    # ------------------------------------------------------------------ reading
    def resident(self) -> int:
        return self.cache.resident()

    def tokens(self) -> list[int]:
        return self.rows.tokens()

    def summary_rows(self) -> int:
        return len(self.autofold.keys) if self.autofold is not None else 0

    def reserved_rows(self) -> int:
        """Rows of the budget set aside for automatic fold's summaries."""
        return self.config.fold_budget

    def _with_summaries(self, kept: Spans) -> Spans:
        """The marks' spans and automatic fold's summaries (kept like pins)."""
        if self.autofold is None or not self.autofold.keys:
            return kept
        out = kept.copy()
        for a, b in self.autofold.spans():
            out.add(a, b)
        return out

    # ------------------------------------------------------------------ rows leaving
    def cut(self, keep: Spans, reason: str) -> None:
        """Frees the rows outside `keep` (ranks). Slices and deletions, no per-token Python:
        this runs before every forward. What leaves with the window is pooled first."""
        rows = self.rows
        gaps = list(keep.complement(len(rows)))
        if not gaps:
            return
        gone = [rows.keys[r] for a, b in gaps for r in rows.token_ranks(range(a, b))]
        pooling = self.autofold is not None and reason == "window"
        if pooling:
            self._absorb([r for a, b in gaps for r in rows.token_ranks(range(a, b))])
        self.cache.keep(list(keep))
        for a, b in reversed(gaps):
            rows.delete(a, b)
        self.evicted += len(gone)
        if gone:
            self.on_evicted(runs(gone), reason)
        if pooling:
            self._emit()

    def cut_to(self, keys: list, reason: str) -> None:
        """Frees the rows whose keys are not in `keys` (a sorted subset of the order keys)."""
        self.cut(rows_of(self.rows.keys, keys), reason)

    def cut_for(self, stream_len: int, kept: Spans, reserve: int, reason: str = "window") -> None:
        """Cuts to what the policy keeps at `stream_len` (besides sinks and the window: `kept`,
        the marks' spans, and the summaries), with `reserve` rows set aside."""
        self.cut(self.policy.keep_rows(self.rows.keys, stream_len, 0, self._with_summaries(kept), reserve=reserve),
                 reason)

    def room_for(self, stream_len: int, kept: Spans, n: int) -> bool:
        """Whether n more rows fit once cut to what the policy keeps (kept spans included)."""
        keep = self.policy.keep_rows(self.rows.keys, stream_len, 0, self._with_summaries(kept), reserve=n)
        return keep.total() + n <= self.cache.capacity

    # ------------------------------------------------------------------ automatic fold
    def _absorb(self, ranks: list[int]) -> None:
        """Hands automatic fold the rows about to leave with the window, before their slots are freed."""
        af = self.autofold
        ranks = [r for r in ranks if af.wants(self.rows.keys[r])]
        if ranks:
            taken = self.cache.take(torch.tensor(ranks, dtype=torch.long, device=self.device))
            af.absorb([self.rows.keys[r] for r in ranks], taken, self.device)

    def _emit(self) -> None:
        """Places the summary of every block whose last token has left, the oldest summary
        leaving when they are more than automatic fold's rows."""
        af = self.autofold
        layers = self.cache.attention_layers
        for key, kv in af.ready([layer.keys.dtype for layer in layers]):
            if af.full():
                oldest = af.keys[0]
                r = self.rows.find(oldest)
                self.cache.keep([(0, r), (r + 1, len(self.rows))])
                self.rows.delete(r, r + 1)
                af.left(oldest)
            r = self.rows.find(key)
            self.cache.insert(r, kv)
            self.rows.insert(r, key, RowKind.SUMMARY)
            af.placed(key)

    # ------------------------------------------------------------------ forwards
    def _plan(self, first_new: int, n_new: int, kept: Spans) -> tuple[StepPlan, torch.Tensor]:
        """Prepares the cache for a forward of n_new rows (cache.begin) and says what attention
        reads; returns the plan and the rows' position ids."""
        auto = None
        c = self.config
        if c.auto_topk:
            base = self.policy.always_rows(self.rows.keys, first_new, n_new, kept)
            pool = list(base.complement(len(self.rows)))
            if pool:
                auto = AutoSelect(base_rows=_arange(base, self.device), pool_start=pool[0][0], pool_end=pool[-1][1],
                                  topk=c.auto_topk, block_size=c.block_size, summary=c.auto_score,
                                  summaries=self.cache.summaries)
                if self.policy.wants_hits:  # the credit pool learns from the picks
                    auto.hits = torch.zeros(len(self.rows) + n_new + 1, device=self.device)
        collect = self.collect_attention or self.policy.wants_attention
        step = self.cache.begin(n_new, self.device, order=self.path.needs_order(auto, collect))
        if auto is not None:
            auto.stale_from = self.cache.stale_from
        plan = StepPlan(path=self.path.for_step(auto, collect), mask=step.mask, order=step.order, auto=auto,
                        collect={} if collect else None, slots=step)
        return plan, step.position_ids

    @torch.inference_mode()
    def run(self, keys: list, ids: list[int], kept: Spans, evict: bool, kind: RowKind = RowKind.TOKEN) -> torch.Tensor:
        """One forward over a chunk of rows that will sit after every resident row; returns
        the next-token logits (fp32, CPU)."""
        n = len(ids)
        if evict:
            # automatic fold's summaries arrive within the cut: their free rows stay free (auto
            # selection's pool would fill them)
            room = self.autofold.rows - len(self.autofold.keys) if self.autofold is not None else 0
            self.cut(self.policy.keep_rows(self.rows.keys, keys[0], n, self._with_summaries(kept), reserve=room),
                     "window")
        static = self.static is not None and self.static.usable(
            n, self.config.auto_topk, self.collect_attention or self.policy.wants_attention)
        plan = None
        try:
            if static:  # the padded step (static.py): same rows, same tokens, shapes fixed
                logits = self.static.step(ids[0], self.path.resident)
            else:
                plan, position_ids = self._plan(keys[0], n, self._with_summaries(kept))
                logits = self.model(input_ids=torch.tensor([ids], device=self.device), position_ids=position_ids,
                                    **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1,
                                    heedful_plan=plan).logits[0, -1]
        except BaseException:
            # a failure midway leaves some layers with the chunk's rows: forget them, so the
            # session stays usable (a recurrent layer's state cannot be rolled back)
            self.cache.abort()
            raise
        self.cache.commit()
        auto = plan.auto if plan is not None else None
        if auto is not None:
            self.cache.summaries_refreshed()
        self.rows.extend(keys, kind)
        self.peak = max(self.peak, self.cache.resident())
        self.last_attention = plan.collect if plan is not None else None
        if self.last_attention:
            self.policy.observe(self.rows.keys, self.last_attention)
        self._observe_selection(auto, n)
        # fp32 on the CPU for sampling; no op when it is already
        return logits if logits.dtype == torch.float32 and logits.device.type == "cpu" else logits.float().cpu()

    def _observe_selection(self, a: AutoSelect | None, n: int) -> None:
        """Tells the policy which pool rows auto selection picked (the credit pool's input)."""
        if not self.policy.wants_hits:
            return
        rows, counts = (), ()
        share = getattr(self.model, SUM_ACROSS_RANKS, None)  # tensor parallel: the other ranks' heads count too
        if share is not None and a is not None and a.hits is not None:
            both = share(torch.cat([a.hits, a.hits.new_tensor([a.selections])]))
            a.hits, a.selections = both[:-1], int(both[-1])
        if a is not None and a.hits is not None and a.selections:
            h = a.hits[1 + a.pool_start : 1 + a.pool_end].cpu()
            picked = h.nonzero().flatten()
            rows, counts = picked.tolist(), (h[picked] / a.selections).tolist()
        self.policy.observe_selection(self.rows.keys, n, (a.pool_start, a.pool_end) if a is not None else (0, 0),
                                      rows, counts)

    # ------------------------------------------------------------------ re-encoding
    def reencode(self, missing: list, id_of, kept: Spans, chunk: int, kinds: dict | None = None) -> torch.Tensor | None:
        """Re-encodes freed rows in place: rows after the first of them are taken out and put
        back in order, so each re-encoded row attends what is resident before it. `id_of(key)`
        gives each key's token id, `kinds` the kind of keys that are not tokens. Returns the
        logits of the last forward (None when nothing ran)."""
        if not missing:
            return None
        rows, kinds = self.rows, kinds or {}
        first = missing[0]
        # rows from the first on are taken out (a resident key among `missing` is re-run, its
        # old row dropped) and put back in order between the re-encoded ones
        start = rows.find(first)
        after = list(range(start, len(rows)))
        taken = self.cache.take(torch.tensor(after, dtype=torch.long, device=self.device)) if after else None
        detached = list(zip(rows.keys[start:], rows.kinds[start:]))
        if after:
            self.cache.truncate(start)
            rows.truncate(start)
        missing_set = set(missing)
        order = sorted(missing_set | {k for k, _ in detached})
        back = {k: (i, kind) for i, (k, kind) in enumerate(detached)}
        run: list = []
        logits = None

        def flush():
            nonlocal logits
            for a in range(0, len(run), chunk):
                part = run[a : a + chunk]
                kind = kinds.get(part[0], RowKind.TOKEN)
                logits = self.run(part, [id_of(k) for k in part], kept, evict=False, kind=kind)
            run.clear()

        for k in order:
            if k in missing_set:
                if run and kinds.get(k, RowKind.TOKEN) != kinds.get(run[0], RowKind.TOKEN):
                    flush()
                run.append(k)
            else:
                flush()
                i, kind = back[k]
                self.cache.put([(kk[:, :, i : i + 1], v[:, :, i : i + 1]) for kk, v in taken])
                rows.append(k, kind)
        flush()
        return logits

    # ------------------------------------------------------------------ settings and rewinds
    def resize(self, budget: int, policy: RetentionPolicy, stream_len: int, kept: Spans) -> None:
        """A new budget: the rows cut down to it (as the policy would), the buffers reallocated."""
        self.policy = policy
        if budget != self.cache.capacity:
            if self.cache.resident() > budget:
                self.cut(policy.keep_rows(self.rows.keys, stream_len, 0, self._with_summaries(kept)), "budget")
            self.cache.resize(budget)

    def rewind(self, index: int, window: int, keep_extra) -> None:
        """A stream cut back to [0, index): rows past the cut go; summaries of blocks the
        re-read window reaches go (autofold.cut); `keep_extra(key)` says which rows that are
        not tokens stay (the gists of folds before the cut)."""
        last = index - 1
        if self.autofold is not None:
            self.autofold.cut(max(0, index - window))
            summaries = set(self.autofold.keys)
        else:
            summaries = set()
        keep = [k for k, kind in self.rows.items() if k < max(last, 0) and
                (kind is RowKind.TOKEN or k in summaries or (kind is RowKind.GIST and keep_extra(k)))]
        self.cut_to(keep, "rewind")

    def restore_summaries(self, tail: list[int], id_of, kept: Spans, chunk: int) -> torch.Tensor | None:
        """Streams `tail` through the window again so its blocks are pooled (a resume with
        automatic fold); the evictions it makes were counted by the session that made them.
        Returns the last forward's logits."""
        logits = None
        for i in range(0, len(tail), chunk):
            part = tail[i : i + chunk]
            logits = self.run(part, [id_of(t) for t in part], kept, evict=True)
        self.evicted = 0
        return logits

    def index_of(self, key) -> int | None:
        r = bisect.bisect_left(self.rows.keys, key)
        return r if r < len(self.rows) and self.rows.keys[r] == key else None
