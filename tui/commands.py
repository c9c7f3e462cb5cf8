"""Command palette (ctrl+p): export, search and recall evicted text (type the text, or
"recall TEXT", "recall 'TEXT'", 'recall "TEXT"'), settings (type "window 128", "budget 2048",
"temperature 0.7", "top_p 0.9"), new session, open session (type "open session 3"), heat
overlay, generate, stop; with a picker (heedful chat --picker DIR), auto-pin on/off and
accepting or rejecting the suggestions in view."""

from __future__ import annotations

import re
from functools import partial

SETTING = re.compile(r"^(window|budget|temperature|top[_ -]p)\s*=?\s*(\d+(?:\.\d+)?)$", re.I)
OPEN = re.compile(r"^open(?: session)?\s+(\d+)$", re.I)
RECALL = re.compile(r"""^recall\s+(?:'(.+)'|"(.+)"|(.+))$""", re.I | re.S)


def recall_texts(query: str) -> list[str]:
    """The texts a query may mean to recall: "recall TEXT" (quotes optional) and the query
    itself, the first one first, each once."""
    q = query.strip()
    texts = []
    m = RECALL.match(q)
    if m:
        texts.append(next(g for g in m.groups() if g is not None))
    texts.append(q)
    return list(dict.fromkeys(t for t in texts if len(t) >= 2))

from textual.command import Hit, Hits, Provider


class HeedfulCommands(Provider):
    def _fixed(self):
        app = self.app
        return [
            ("Export pinned context as Markdown", partial(app.action_export, "md")),
            ("Export pinned context as text", partial(app.action_export, "txt")),
            ("Export pinned context as JSON Lines", partial(app.action_export, "jsonl")),
            ("Toggle attention heat overlay", app.action_heat),
            ("Fold the selection into a gist (f)", app.action_fold),
            ("Unfold the gist under the cursor (F)", app.action_unfold),
            ("Generate / continue", app.action_generate),
            ("Stop generating", app.action_stop),
            ("New session (same model and settings)", app.new_session),
        ] + ([  # heedful chat --picker (tui/suggest.py)
            ("Toggle auto-pin (the picker pins what it scores high)", app.action_toggle_auto_pin),
            ("Accept the picker's suggestions in view", app.action_accept_suggestions),
            ("Reject the picker's suggestions in view", app.action_reject_suggestions),
        ] if app.suggest.picker is not None else [])

    async def discover(self) -> Hits:
        if self.app.session is None:  # the model is loading
            return
        for name, fn in self._fixed():
            yield Hit(1.0, name, fn)

    async def search(self, query: str) -> Hits:
        if self.app.session is None:  # the model is loading
            return
        matcher = self.matcher(query)
        for name, fn in self._fixed():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), fn)
        q = query.strip()
        m = SETTING.match(q)
        if m and not (m.group(1).lower() in ("window", "budget") and "." in m.group(2)):  # those take whole numbers
            name = m.group(1).lower().replace("-", "_").replace(" ", "_")
            value = int(m.group(2)) if name in ("window", "budget") else float(m.group(2))
            yield Hit(1.0, f"Set {name} to {value}", partial(self.app.apply_setting, name, value),
                      help="changes the setting from the next token on (logged in the session)")
        m = OPEN.match(q)
        if m:
            yield Hit(1.0, f"Open session {m.group(1)}", partial(self.app.open_session, int(m.group(1))),
                      help="resume a stored session")
        texts = recall_texts(q)
        stream = self.app.session.text() if texts else ""
        for text in texts:
            if text in stream:
                # search the whole stream (evicted text included) and recall the last match
                yield Hit(1.0, f"Recall {text!r} (bring it back, pinned)", partial(self.app.recall_text, text),
                          help="re-encodes the text at the end of the stream and pins it")
