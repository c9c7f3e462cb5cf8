"""The side panel: memory meter, stream counters, speed, gate mean, the pins and the folds.

`evicted` is the number of tokens of the stream whose KV rows are gone (dropped ones
included): the stream's length less the resident tokens. It is what the store counts
(`heedful sessions`), the same before and after a resume. (Session.stats().evicted counts
row frees instead: a token re-encoded and freed again counts twice, and a resumed session
starts it from 0.)

`folds` is the number of folded spans, `gist rows` the resident rows their gists hold;
`summary rows` (shown with automatic folding, --fold-budget) the rows of the automatic fold
summaries (the rows' kinds: Session.rows)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from heedful.selector.rows import RowKind
from heedful.tui.styles import PIN_YELLOW, STYLES, SUGGEST_GOLD


def _bar(used: int, total: int, width: int = 20) -> str:
    filled = 0 if not total else round(width * used / total)
    return "█" * filled + "░" * (width - filled)


def _total(spans) -> int:
    return sum(b - a for a, b in spans)


class SidePanel(Static):
    def show(self, session, *, generating: bool, show_speed: bool = True, retained: list[int] | None = None,
             rows: list | None = None, folds: list | None = None, picker: dict | None = None) -> None:
        st = session.stats()
        retained = session.retained() if retained is None else retained
        resident = len(retained)
        folds = session.folds() if folds is None else folds
        rows = session.rows() if rows is None else rows
        gist_rows = sum(1 for _, kind in rows if kind is RowKind.GIST)
        summary_rows = sum(1 for _, kind in rows if kind is RowKind.SUMMARY)
        evicted = max(0, st.tokens - resident)
        t = Text()
        t.append("memory ", style="bold")
        t.append(f"{st.resident}/{st.budget} KV rows\n")
        t.append(_bar(st.resident, st.budget) + "\n", style="green" if st.resident < st.budget else "yellow")
        t.append(f"window {st.window}  sinks {session.config.sinks}\n")
        t.append(f"tokens {st.tokens}  generated {st.generated}\n")
        t.append(f"evicted {evicted}  dropped {_total(session.dropped())}\n")
        t.append(f"pinned {st.pinned}\n")
        t.append(f"folds {len(folds)}  gist rows {gist_rows}\n")
        if summary_rows or session.config.fold_budget:
            pooled = "mean" if session.config.fold_compressor == "mean" else "learned"
            t.append(f"summary rows {summary_rows} ({pooled})\n")
        if show_speed:
            t.append(f"speed {st.tokens_per_s:.1f} tok/s\n")
        gate = session.gate_mean
        if session.gated:
            t.append("gated model" + (f", mean gate {gate:.3f}" if gate is not None else "") + "\n")
        if picker is not None:  # heedful chat --picker (tui/suggest.py)
            t.append(f"picker: auto-pin {'on' if picker['auto_pin'] else 'off'}\n")
            t.append(f"  {picker['suggested']} words suggested, {picker['auto_pinned']} auto-pinned\n",
                     style=SUGGEST_GOLD)
        t.append("● generating\n" if generating else "○ idle\n", style="bold green" if generating else "dim")
        t.append("\npins\n", style="bold")
        pins = session.pins()
        if not pins:
            t.append("  (none: select tokens, space)\n", style="dim")
        for a, b in pins[-30:]:
            snippet = session.text(a, b).replace("\n", "⏎")
            if len(snippet) > 26:
                snippet = snippet[:25] + "…"
            t.append(f"  [{a},{b}) ", style=PIN_YELLOW)
            t.append(f"{snippet}\n")
        if folds:
            t.append("\nfolds\n", style="bold")
        for a, b, gist in folds[-10:]:
            gist = gist.replace("\n", " ")
            t.append(f"  [{a},{b}) ")
            t.append(f"⟨{gist if len(gist) <= 24 else gist[:23] + '…'}⟩\n", style=STYLES["folded"])
        self.update(t)
