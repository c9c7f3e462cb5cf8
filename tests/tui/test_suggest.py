"""`heedful chat --picker DIR`: a picker learned from recorded sessions suggests words as the
text streams (scored on the generating worker's thread), `a` accepts, `x` rejects, `A`
turns auto-pin on and off; the store records each (what `heedful learn` reads next time)."""

from __future__ import annotations

import threading

import pytest

from heedful.learn.autopin import AutoPinner
from heedful.learn.labels import token_labels
from heedful.learn.picker import Picker
from heedful.spans import Spans
from heedful.tui.panel import SidePanel
from heedful.tui.prompt import PromptBox
from heedful.tui.suggest import visible_tokens
from heedful.tui.styles import STYLES
from tests.learn.conftest import picker_dir, recorded  # noqa: F401 - a picker learned from replayed episodes
from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio

FACTS = "Facts: The code for the red door is 4821. Tom was born in Lima.\nElla walked to the market."


def _picker(picker_dir, lm, threshold=None):
    """What `heedful chat --picker DIR` passes the app: session -> AutoPinner, pinning off."""
    pk = Picker.load(picker_dir, lm)
    if threshold is not None:
        pk.meta = {**pk.meta, "threshold": threshold}
    return lambda session: AutoPinner(pk, session.model, pinning=False)


async def _send(app, pilot, text: str) -> None:
    box = app.query_one(PromptBox)
    box.focus()
    box.value = text
    await pilot.press("enter")
    await settle(app, pilot)


def _styles(view) -> list:
    return [seg.style for y in range(view.size.height) for seg in view.render_line(y)]


def _tokens(spans) -> set[int]:
    return {t for a, b, *_ in spans for t in range(a, b)}


async def test_suggestions_stream_in_then_a_accepts_and_x_rejects(tiny_qwen35, store, tmp_path, picker_dir):
    lm = tiny_qwen35
    app = chat_app(lm, store, tmp_path, picker=_picker(picker_dir, lm), chunk=12, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(110, 30)) as pilot:
        await _send(app, pilot, FACTS)
        n_prompt = len(lm.tokenizer(FACTS)["input_ids"])
        assert len(s) == n_prompt + 12 and app.focused is app.view
        sug = list(app.suggest.suggestions)
        assert len(sug) >= 4 and not s.pins()  # the picker suggests; nothing is pinned by itself
        assert all(a < b <= len(s) and s.text(a, b).strip() for a, b, _ in sug)
        assert any(a >= n_prompt for a, _, _ in sug)  # generated words too, scored from the stream's own steps
        view = app.view
        t = sug[0][0]
        assert view.memory.kind(t) == "suggested" and STYLES["suggested"] in _styles(view)
        assert "suggested" in str(app.query_one(SidePanel).render())
        # a: the suggestion under the cursor only
        first, second = sug[0], sug[1]
        view.move(first[0])
        await pilot.press("a")
        await pilot.pause()
        assert Spans(s.pins()).overlaps(first[0], first[1]) and s.pins() == [(first[0], first[1])]
        assert view.memory.kind(first[0]) == "pinned"
        # x: the suggestion under the cursor is rejected, nothing pinned, no longer shown
        view.move(second[0])
        await pilot.press("x")
        await pilot.pause()
        assert not Spans(s.pins()).overlaps(second[0], second[1])
        assert all(x[0] != second[0] for x in app.suggest.suggestions) and view.memory.kind(second[0]) != "suggested"
        # x on a token no suggestion covers: every suggestion in view goes
        free = next(t for t in range(len(s)) if t not in _tokens(app.suggest.suggestions) and t not in Spans(s.pins()))
        view.move(free)
        rest = list(app.suggest.suggestions)
        await pilot.press("x")
        await pilot.pause()
        assert rest and not app.suggest.suggestions and s.pins() == [(first[0], first[1])]
    sid = app.recorder.session_id
    events = store.events(sid)
    accepts = [e for e in events if e["op"] == "accept"]
    rejects = [e for e in events if e["op"] == "reject"]
    assert [e["range"] for e in accepts] == [[first[0], first[1]]] and 0 <= accepts[0]["score"] <= 1
    assert [e["range"] for e in rejects] == [[second[0], second[1]]] + [[a, b] for a, b, _ in rest]
    assert all("by" not in e for e in events)  # all the person's
    # heedful learn reads them: the accepted words positive, the rejected negative
    labels, mask, marks = token_labels(events, len(s), list(s.token_sources))
    assert [t for t in range(len(s)) if labels[t]] == list(range(first[0], first[1]))
    assert marks == 3 + len(rest) and all(mask)  # the accept, its pin, the rejects


class _Hold:
    """Holds the generating worker between two tokens when asked (after the pinner has seen
    a token), so a test can act while a stream is under way without racing its end or the
    view's scrolling."""

    def __init__(self):
        self.asked, self.held, self.go = threading.Event(), threading.Event(), threading.Event()

    def wrap(self, picker):
        def make(session):
            pinner = picker(session)
            token = pinner.token

            def held_token(session, tok):  # the worker's thread
                token(session, tok)
                if self.asked.is_set():
                    self.held.set()
                    self.go.wait(60)
            pinner.token = held_token
            return pinner
        return make

    async def ask(self, pilot) -> None:
        self.go.clear()
        self.asked.set()
        for _ in range(3000):
            if self.held.is_set():
                return
            await pilot.pause(0.02)
        raise AssertionError("the stream never reached another token")

    def release(self) -> None:
        self.asked.clear()
        self.held.clear()
        self.go.set()


async def _hold_with_a_suggestion_in_view(app, pilot, hold: _Hold, n0: int) -> None:
    """Waits until the stream has a suggestion at or past n0 on the screen, and holds it there."""
    for _ in range(200):
        await hold.ask(pilot)
        app.refresh_stream()  # the view at the stream's end, the pinner's new suggestions taken
        await pilot.pause()
        seen = visible_tokens(app.view)
        if seen and any(a >= n0 and a < seen[1] and seen[0] < b for a, b, _ in app.suggest.suggestions):
            return
        hold.release()
        await pilot.pause(0.05)
    raise AssertionError("no suggestion of the new text came into view")


async def test_a_accepts_every_suggestion_in_view_while_the_text_streams(tiny_qwen35, store, tmp_path, picker_dir):
    lm = tiny_qwen35
    hold = _Hold()
    app = chat_app(lm, store, tmp_path, picker=hold.wrap(_picker(picker_dir, lm)), chunk=30, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(110, 30)) as pilot:
        await _send(app, pilot, FACTS)
        free = next(t for t in range(len(s)) if t not in _tokens(app.suggest.suggestions))
        app.view.move(free)
        sug = list(app.suggest.suggestions)
        await pilot.press("a")
        await pilot.pause()
        assert sug and not app.suggest.suggestions and _tokens(sug) <= set(t for a, b in s.pins() for t in range(a, b))
        # while the model streams: suggestions of the new text appear, a accepts them between two tokens
        n0, app.chunk = len(s), 200_000
        await pilot.press("g")
        await _hold_with_a_suggestion_in_view(app, pilot, hold, n0)
        assert app.generating  # the stream is only held between two tokens: it has not ended
        await pilot.press("a")
        await pilot.pause()
        hold.release()
        await pilot.press("escape")
        await settle(app, pilot)
        assert s.stats().generated < 200_000
        # another prompt: sent after a space (not glued to the last word) unless the stream ends
        # with whitespace (a newline, or a control character the tiny model wrote), the box emptied
        app.chunk, n1 = 4, len(s)
        sent = ("" if s.token_texts[-1][-1:].isspace() else " ") + "Ann lives in Oslo."  # docs/tui.md's rule
        await _send(app, pilot, "Ann lives in Oslo.")
        assert app.query_one(PromptBox).value == "" and sent in s.text(n1 - 1)
        assert len(s) == n1 + len(lm.tokenizer(sent, add_special_tokens=False)["input_ids"]) + 4
    events = store.events(app.recorder.session_id)
    accepts = [e for e in events if e["op"] == "accept"]
    assert [e["range"] for e in accepts[:len(sug)]] == [[a, b] for a, b, _ in sug]
    assert all("at" not in e for e in accepts[:len(sug)])  # made between two streams
    late = accepts[len(sug):]
    assert late and all(e["at"] >= n0 and e["range"][0] >= n0 for e in late)  # made while it streamed
    pins = [e for e in events if e["op"] == "pin"]
    assert all(any(p["range"] == e["range"] for p in pins) for e in accepts)  # each accept is a pin


async def test_auto_pin_toggle_pins_within_the_budget_and_the_persons_pins_stay(tiny_qwen35, store, tmp_path,
                                                                                 picker_dir):
    lm = tiny_qwen35
    app = chat_app(lm, store, tmp_path, picker=_picker(picker_dir, lm, threshold=0.0), chunk=24, window=16,
                   budget=40, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(110, 30)) as pilot:
        app.view.focus()
        await pilot.press("A")
        await pilot.pause()
        assert app.suggest.auto_pin and app.suggest.pinner.pinning
        assert "auto-pin on" in str(app.query_one(SidePanel).render())
        await _send(app, pilot, FACTS)
        owned = app.suggest.pinner.owned()
        assert owned and _tokens(owned) <= _tokens(s.pins())  # the picker pinned words itself
        assert Spans(s.pins()).union_count(0) + 16 <= 40  # never over the budget
        resident_auto = [t for t in _tokens(owned) if t in set(s.retained())]
        assert resident_auto and app.view.memory.kind(resident_auto[0]) == "autopinned"
        # the person's pin when the budget is full of auto-pins: the oldest auto-pins make room
        mine = (len(s) - 4, len(s) - 2)
        app.view.move(mine[0])
        app.view.move(mine[1] - 1, extend=True)
        await pilot.press("p")
        await pilot.pause()
        assert _tokens([mine]) <= _tokens(s.pins()) and not _tokens([mine]) & _tokens(app.suggest.pinner.owned())
        await pilot.press("g")  # more text: auto-pins come and go, the person's stays
        await settle(app, pilot)
        assert _tokens([mine]) <= _tokens(s.pins()) and Spans(s.pins()).union_count(0) + 16 <= 40
        # x on an auto-pin under the cursor: unpinned, rejected
        a, b = app.suggest.pinner.owned()[-1]
        app.view.move(a)
        await pilot.press("x")
        await pilot.pause()
        assert not Spans(s.pins()).overlaps(a, b)
        # A again: off; the next text is suggested, not pinned
        await pilot.press("A")
        pins_before = s.pins()
        await pilot.press("g")
        await settle(app, pilot)
        assert not app.suggest.auto_pin and app.suggest.suggestions
        assert _tokens(s.pins()) <= _tokens(pins_before)
    events = store.events(app.recorder.session_id)
    by = [e for e in events if e.get("by") == "picker"]
    assert {e["op"] for e in by} == {"pin", "unpin"}  # the picker's pins and the room it made
    assert next(e for e in events if e["op"] == "prompt").get("picker_pins")
    person = [e for e in events if e["op"] in ("pin", "unpin") and "by" not in e]
    assert [e["range"] for e in person] == [list(mine), [a, b]] and person[1]["op"] == "unpin"
    assert [e["range"] for e in events if e["op"] == "reject"] == [[a, b]]
    labels, mask, _ = token_labels(events, len(s))
    assert all(labels[t] for t in range(*mine)) and not any(labels[t] for t in range(a, b))
    assert not all(mask)  # the auto-pins nobody judged are left out


async def test_without_a_picker_the_keys_are_hidden_and_say_so(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        await _send(app, pilot, "Alice met Bob.")
        assert app.check_action("accept_suggestions", ()) is False
        assert "auto-pin" not in str(app.query_one(SidePanel).render())
        app.action_toggle_auto_pin()
        await pilot.pause()
        assert not app.suggest.auto_pin and not [e for e in store.events(app.recorder.session_id) if e["op"] == "accept"]


def test_chat_picker_and_auto_pin_reach_the_app(tiny_qwen35_dir, picker_dir, tmp_path, monkeypatch, cli):
    from heedful.tui.app import HeedfulApp

    seen = []
    def run(self, *a, **k):  # what the app's worker does first: the model, the picker, the session
        self.open_now()
        seen.append((self.suggest.picker, self.suggest.auto_pin))

    monkeypatch.setattr(HeedfulApp, "run", run)
    db = tmp_path / "chat.db"
    for flags in (["--picker", picker_dir], ["--picker", picker_dir, "--auto-pin"]):
        code, _, err = cli("chat", "--db", db, "--model", tiny_qwen35_dir, *flags)
        assert code in (0, None), err
    assert [auto for _, auto in seen] == [False, True]
    pinner = seen[0][0](type("S", (), {"model": None})())
    assert isinstance(pinner, AutoPinner) and pinner.pinning is False
    code, _, err = cli("chat", "--db", db, "--model", tiny_qwen35_dir, "--auto-pin")
    assert code == 2 and "--auto-pin needs --picker" in err
    code, _, err = cli("chat", "--db", db, "--model", tiny_qwen35_dir, "--picker", tmp_path / "nothing")
    assert code == 2 and "no such folder" in err and len(seen) == 2
