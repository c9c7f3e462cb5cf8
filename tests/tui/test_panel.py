"""The side panel's figures against the store's."""

from __future__ import annotations

import re

import pytest

from heedful.tui.app import HeedfulApp
from heedful.tui.panel import SidePanel
from tests.tui.conftest import chat_app, settle
from tests.rows import summaries

pytestmark = pytest.mark.anyio


def _panel_figure(app, name: str) -> int:
    text = str(app.query_one(SidePanel).content)
    return int(re.search(rf"\b{name} (\d+)", text).group(1))


def _store_figures(store, sid) -> dict:
    return store.session(sid).to_json()


async def test_evicted_in_the_panel_is_the_stores_figure_before_and_after_a_resume(tiny_qwen35, store, tmp_path):
    """The panel counted row frees (Session.stats().evicted: a re-encoded token freed again
    counts twice, and a resumed session starts from 0); the store counts the tokens whose
    rows are gone. The panel shows the store's figure."""
    from heedful.app.open import resume

    app = chat_app(tiny_qwen35, store, tmp_path, chunk=60, window=16, budget=48)
    s = app.session
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press(*"The vault code is 4821. Remember it.", "enter")
        await settle(app, pilot)
        app.apply(lambda: s.rewind(len(s) - 10))  # freed window tokens come back
        await pilot.press("g")
        await settle(app, pilot)
        app.apply(lambda: s.drop((len(s) - 5, len(s) - 3)))  # dropped inside the window
        app.recorder.flush()
        sid = app.recorder.session_id
        figures = _store_figures(store, sid)
        assert figures["evicted"] > 0 and figures["dropped"] == 2
        assert _panel_figure(app, "evicted") == figures["evicted"] == len(s) - len(s.retained())
        assert _panel_figure(app, "dropped") == figures["dropped"]
    again = resume(store, sid, lm=tiny_qwen35)
    app2 = HeedfulApp(again, store=store, recorder=again.recorder, show_speed=False, export_dir=tmp_path)
    async with app2.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app2.recorder.flush()
        figures = _store_figures(store, sid)
        assert _panel_figure(app2, "evicted") == figures["evicted"] > 0
        assert _panel_figure(app2, "dropped") == figures["dropped"] == 2


async def test_the_panel_counts_summary_rows_and_names_their_compressor(tiny_qwen35, store, tmp_path):
    from heedful.selector.compressor import LearnedPool, model_sizes
    from heedful.selector.session import Session

    LearnedPool(**model_sizes(tiny_qwen35.model), block=4).save(tmp_path / "c")
    for compressor, word in ((str(tmp_path / "c"), "learned"), ("mean", "mean")):
        rec = store.new_session(title="fold")
        s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, recorder=rec, gated=True, window=16, budget=24,
                    fold_budget=6, fold_block=4, fold_compressor=compressor)
        app = HeedfulApp(s, store=store, recorder=rec, chunk=40, show_speed=False, export_dir=tmp_path)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press(*"The vault code is 4821.", "enter")
            await settle(app, pilot)
            n_summaries = summaries(s)
            assert n_summaries > 0
            assert f"summary rows {n_summaries} ({word})" in str(app.query_one(SidePanel).content)
