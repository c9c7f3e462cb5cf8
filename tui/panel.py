"""The side panel: memory meter, stream counters, speed, gate mean, and the pins.

`evicted` is the number of tokens of the stream whose KV rows are gone (dropped ones
included): the stream's length less the resident tokens. It is what the store counts
(`heedful sessions`), the same before and after a resume. (Session.stats().evicted counts
row frees instead: a token re-encoded and freed again counts twice, and a resumed session
starts it from 0.)"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from heedful.tui.token_view import PIN_YELLOW


def _bar(used: int, total: int, width: int = 20) -> str:
    filled = 0 if not total else round(width * used / total)
    return "█" * filled + "░" * (width - filled)


def _total(spans) -> int:
    return sum(b - a for a, b in spans)


class SidePanel(Static):
    def show(self, session, *, generating: bool, show_speed: bool = True, retained: list[int] | None = None) -> None:
        st = session.stats()
        resident = len(session.retained() if retained is None else retained)
        evicted = max(0, st.tokens - resident)
        t = Text()
        t.append("memory ", style="bold")
        t.append(f"{st.resident}/{st.budget} KV rows\n")
        t.append(_bar(st.resident, st.budget) + "\n", style="green" if st.resident < st.budget else "yellow")
        t.append(f"window {st.window}  sinks {session.config.sinks}\n")
        t.append(f"tokens {st.tokens}  generated {st.generated}\n")
        t.append(f"evicted {evicted}  dropped {_total(session.dropped())}\n")
        t.append(f"pinned {st.pinned}\n")
        if show_speed:
            t.append(f"speed {st.tokens_per_s:.1f} tok/s\n")
        gate = getattr(session, "gate_mean", None)
        if session.gated:
            t.append("gated model" + (f", mean gate {gate:.3f}" if gate is not None else "") + "\n")
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
        self.update(t)
