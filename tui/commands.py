"""Command palette (ctrl+p): export, search and recall evicted text, heat overlay, stop."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider


class HeedfulCommands(Provider):
    def _fixed(self):
        app = self.app
        return [
            ("Export pinned context as Markdown", partial(app.action_export, "md")),
            ("Export pinned context as text", partial(app.action_export, "txt")),
            ("Export pinned context as JSON Lines", partial(app.action_export, "jsonl")),
            ("Toggle attention heat overlay", app.action_heat),
            ("Generate / continue", app.action_generate),
            ("Stop generating", app.action_stop),
        ]

    async def discover(self) -> Hits:
        for name, fn in self._fixed():
            yield Hit(1.0, name, fn)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, fn in self._fixed():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), fn)
        q = query.strip()
        if len(q) >= 2 and q in self.app.session.text():
            # search the whole stream (evicted text included) and recall the last match
            yield Hit(1.0, f"Recall {q!r} (bring it back, pinned)", partial(self.app.recall_text, q),
                      help="re-encodes the text at the end of the stream and pins it")
