"""What the token view draws with: the styles of each kind of token, the engine's memory as
captured once per refresh (MemoryState), which says each token's kind, and the heat overlay's
weights (heat_map)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.style import Style

from heedful.selector.rows import RowKind
from heedful.spans import Spans

# Colours are given as RGB: named ANSI colours ("yellow", "blue") are repainted by Textual's
# theme (orange, purple), so the screen would not show what docs/tui.md says.
PIN_YELLOW, SELECT_BLUE, SUGGEST_GOLD = "#ffd700", "#005fd7", "#d7c38f"
STYLES = {
    "pinned": Style(color="#000000", bgcolor=PIN_YELLOW, bold=True),
    "autopinned": Style(color="#000000", bgcolor="#d7af5f"),  # pinned by the picker (tui/suggest.py)
    "suggested": Style(color=SUGGEST_GOLD, underline=True),  # the picker would pin it: a quiet hint
    "suggested_evicted": Style(color="#8a8060", underline=True),
    "sink": Style(color="#5fd7d7"),
    "window": Style(color="#ffffff"),
    "evicted": Style(color="#6c6c6c"),
    "dropped": Style(color="#d75f5f", strike=True),
    "folded": Style(color="#afafaf", bgcolor="#262640", italic=True),
    "cursor": Style(reverse=True),
    "markup": Style(dim=True),  # what a chat template writes around the turns
    "selected": Style(color="#ffffff", bgcolor=SELECT_BLUE),
    "selected_pinned": Style(color=PIN_YELLOW, bgcolor=SELECT_BLUE, bold=True),  # still reads as pinned
}


def component_class(kind: str) -> str:
    """The token view's component class of a kind: "suggested_evicted" -> "token-view--suggested-evicted"."""
    return "token-view--" + kind.replace("_", "-")


def component_css() -> str:
    """STYLES as the token view's component classes (DEFAULT_CSS): an app's CSS may restyle
    each kind (`TokenView > .token-view--pinned { background: ...; }`)."""
    rules = []
    for kind, st in STYLES.items():
        decl = [f"color: {st.color.triplet.hex};"] if st.color else []
        decl += [f"background: {st.bgcolor.triplet.hex};"] if st.bgcolor else []
        flags = [name for name, on in (("bold", st.bold), ("dim", st.dim), ("italic", st.italic),
                                       ("underline", st.underline), ("strike", st.strike), ("reverse", st.reverse))
                 if on]
        decl += [f"text-style: {' '.join(flags)};"] if flags else []
        rules.append(f"TokenView > .{component_class(kind)} {{ {' '.join(decl)} }}")
    return "\n".join(rules)


@dataclass
class MemoryState:
    """What the view needs to colour tokens, captured once per refresh."""

    resident: set = field(default_factory=set)
    pins: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    sinks: int = 0
    heat: dict = field(default_factory=dict)  # token index -> attention weight, 0..1
    folds: dict = field(default_factory=dict)  # first token -> (end, gist) of each folded span
    suggested: Spans = field(default_factory=Spans)  # a picker's suggestions (tui/suggest.py)
    auto: Spans = field(default_factory=Spans)  # the picker's own pins (auto-pin)

    def in_spans(self, spans, t: int) -> bool:
        return any(a <= t < b for a, b in spans)

    def kind(self, t: int) -> str:
        if t in self.folds:
            return "folded"
        if self.in_spans(self.dropped, t):
            return "dropped"
        if t not in self.resident:
            return "suggested_evicted" if t in self.suggested else "evicted"
        if self.in_spans(self.pins, t):
            return "autopinned" if t in self.auto else "pinned"
        if t in self.suggested:
            return "suggested"
        if t < self.sinks:
            return "sink"
        return "window"


def heat_map(attention: dict, rows: list, folds: list) -> dict:
    """Token index -> the newest token's attention (mean over layers), relative to the most
    attended. The weights have one entry per resident row (Session.rows), gist rows
    included: a token's own row gives its heat, and a fold's gist rows together give the
    heat of the fold (drawn under its first token); summary rows show nowhere."""
    layers = list(attention.values())
    if not layers or len(layers[0]) != len(rows):
        return {}  # read while a step changed the rows: the next refresh shows it
    mean = (sum(layers) / len(layers)).tolist()
    heat = {}
    for (key, kind), w in zip(rows, mean):
        if kind is RowKind.TOKEN:
            heat[key] = w
        elif kind is RowKind.GIST:
            a = next((a for a, b, _ in folds if a <= key < b), None)
            if a is not None:
                heat[a] = heat.get(a, 0.0) + w
    top = max(heat.values(), default=0.0) or 1.0
    return {t: w / top for t, w in heat.items()}
