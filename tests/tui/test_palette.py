"""The command palette (ctrl+p): what typed queries offer and do."""

from __future__ import annotations

import pytest

from tests.tui.conftest import chat_app

pytestmark = pytest.mark.anyio


async def _palette(pilot, query: str) -> None:
    await pilot.press("ctrl+p")
    await pilot.press(*query)
    await pilot.pause(0.3)
    await pilot.press("enter")
    await pilot.pause()


@pytest.mark.parametrize("query", ["vault", "recall vault", "Recall 'vault'", 'recall "vault"', "RECALL  vault "])
async def test_recall_from_the_palette_with_or_without_the_word_and_quotes(tiny_qwen35, store, tmp_path, query):
    app = chat_app(tiny_qwen35, store, tmp_path, window=8, budget=32)
    s = app.session
    s.prompt("The vault code is 4821. Remember it. Alice met Bob at the station at noon.")
    (vault,) = s.resolve("vault")
    assert not set(range(*vault)) & set(s.retained())  # evicted by now
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await _palette(pilot, query)
        recalls = [e for e in store.events(app.recorder.session_id) if e["op"] == "recall"]
        assert [e["range"] for e in recalls] == [list(vault)]
        assert s.text(*s.pins()[-1]) == s.text(*vault) == "vault"
