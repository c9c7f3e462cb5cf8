"""Marks on the prompt before sending: ctrl+t in the prompt box marks the word under the
cursor, and Enter sends session.prompt(text, pin=[...]) so those words are pinned before the
prompt is processed."""

from __future__ import annotations

import pytest
from textual.widgets.input import Selection

from heedful.tui.prompt import PromptBox
from heedful.tui.styles import STYLES
from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio

PROMPT = "The vault code is 4821. Remember it. Alice met Bob at the station at noon."


async def test_ctrl_t_marks_words_to_pin_before_the_prompt_is_processed(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path, window=8, budget=32, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        box = app.query_one(PromptBox)
        await pilot.press(*PROMPT)
        box.cursor_position = PROMPT.index("4821") + 2  # inside the word
        await pilot.press("ctrl+t")
        box.cursor_position = PROMPT.index("Bob") + 3  # just after it
        await pilot.press("ctrl+t")
        box.cursor_position = PROMPT.index("noon")
        await pilot.press("ctrl+t", "ctrl+t")  # toggled on and off again
        assert box.marks == ["4821", "Bob"]
        assert "4821" in str(box.border_subtitle) and "Bob" in str(box.border_subtitle)
        shown = box._value  # the marked words in the pin colours, in the box
        pinned = sorted((span.start, span.end) for span in shown.spans if span.style == STYLES["pinned"])
        assert pinned == [(PROMPT.index("4821"), PROMPT.index("4821") + 4), (PROMPT.index("Bob"), PROMPT.index("Bob") + 3)]
        await pilot.press("enter")
        await settle(app, pilot)
        assert box.value == "" and box.marks == [] and not box.border_subtitle
        pins = s.pins()
        assert sorted(s.text(a, b).strip() for a, b in pins) == ["4821", "Bob"]
        # pinned before the prompt was read: still resident after the window moved on
        retained = set(s.retained())
        assert all(t in retained for a, b in pins for t in range(a, b))
        assert len(s) > 40 and min(retained) < len(s) - 8
    (prompt,) = [e for e in store.events(app.recorder.session_id) if e["op"] == "prompt"]
    assert prompt["pins"] == [list(p) for p in pins]
    assert not [e for e in store.events(app.recorder.session_id) if e["op"] == "pin"]


async def test_a_refused_prompt_keeps_its_text_and_marks(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path, window=8, budget=10)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        box = app.query_one(PromptBox)
        await pilot.press(*PROMPT, "ctrl+t")  # the cursor is after "noon."
        assert box.marks == [] and any("No word" in n.message for n in app._notifications)
        box.selection = Selection(PROMPT.index("4821"), PROMPT.index(" Alice"))  # selected text: one mark
        await pilot.press("ctrl+t")
        assert box.marks == ["4821. Remember it."]
        await pilot.press("enter")  # 8 pinned tokens + window 8 > budget 10
        await settle(app, pilot)
        assert any("budget" in n.message for n in app._notifications)
        assert len(s) == 0 and box.value == PROMPT and box.marks == ["4821. Remember it."]
        assert app.focused is box


async def test_a_prompt_after_half_a_character_is_not_glued_to_it(tiny_qwen35, store, tmp_path):
    """The stream ends in the first byte of a multi-byte character (its token has no text yet)
    after a space: the prompt still gets its leading space."""
    from tests.tui.conftest import chat_app, settle

    app = chat_app(tiny_qwen35, store, tmp_path, chunk=1)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        s.prompt("Hello ")
        lead = s.tokenizer.convert_tokens_to_ids("â")  # byte 0xE2: starts a three-byte character
        s.feed([lead], "generated")
        assert s.token_texts[-1] == "" and s.token_texts[-2].endswith(" ")
        app.query_one("#prompt").value = "Ann"
        await pilot.press("enter")
        await settle(app, pilot)
        assert "\ufffd Ann" in s.text()
