"""`heedful chat` shows its screen at once and loads the model behind a "loading model …" line
(the app runs its opener in a worker): what is typed meanwhile stays in the prompt box, Enter
sends it once the session is open, and a failed load ends the app with its error (one line,
exit 2)."""

from __future__ import annotations

import threading

import pytest

from heedful.errors import HeedfulError
from heedful.selector.session import Session
from heedful.tui.app import HeedfulApp, Opened
from heedful.tui.panel import SidePanel
from heedful.tui.prompt import PromptBox
from tests.tui.conftest import settle

pytestmark = pytest.mark.anyio


async def test_the_screen_shows_while_the_model_loads_and_a_prompt_typed_meanwhile_is_sent(tiny_qwen35, store,
                                                                                           tmp_path):
    lm, go, calls = tiny_qwen35, threading.Event(), []

    def opener() -> Opened:  # the worker's thread: held until the test lets it go
        calls.append(threading.current_thread() is threading.main_thread())
        assert go.wait(60)
        rec = store.new_session(title="opened")
        return Opened(Session(lm.model, lm.tokenizer, recorder=rec, gated=lm.gated, window=128, budget=256), rec)

    app = HeedfulApp(opener=opener, store=store, chunk=6, export_dir=tmp_path, show_speed=False,
                     loading="loading model tiny …")
    async with app.run_test(size=(110, 30)) as pilot:
        await pilot.pause()
        box = app.query_one(PromptBox)
        assert app.session is None and app.focused is box
        assert "loading model tiny …" in str(app.query_one("#loading").render())
        assert "loading model tiny …" in str(app.query_one(SidePanel).render())
        await pilot.press(*"Alice met Bob.")
        await pilot.press("enter", "g", "space")  # typed text; the session's keys do nothing yet
        await pilot.pause()
        assert box.value == "Alice met Bob.g " and app.session is None and calls == [False]
        await pilot.press("backspace", "backspace")
        go.set()
        for _ in range(500):
            if app.session is not None and not app.generating and not box.value:
                break
            await pilot.pause(0.02)
        await settle(app, pilot)
        s = app.session
        assert s is not None and app.recorder is s.recorder and not app.query("#loading")
        assert s.text().startswith("Alice met Bob.") and s.stats().generated == 6  # sent once open
        assert box.value == "" and app.focused is app.view
        assert "memory" in str(app.query_one(SidePanel).render())
    ops = [e["op"] for e in store.events(app.recorder.session_id)]
    assert ops[:3] == ["config", "prompt", "generate"]


async def test_a_load_that_fails_ends_the_app_with_its_error(tmp_path):
    def opener():
        raise HeedfulError("no such model: nothing")

    app = HeedfulApp(opener=opener, export_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(200):
            if not app.is_running:
                break
            await pilot.pause(0.02)
    assert isinstance(app.load_error, HeedfulError) and app.return_code == 2


def test_chat_reports_a_model_it_cannot_load_in_one_line(cli, tmp_path, monkeypatch):
    run = HeedfulApp.run
    monkeypatch.setattr(HeedfulApp, "run", lambda self: run(self, headless=True))
    code, _, err = cli("chat", "--db", tmp_path / "c.db", "--model", tmp_path / "no-model-here")
    assert code == 2 and err.startswith("heedful: error:") and err.count("\n") == 1, err


def test_the_app_takes_a_session_or_an_opener():
    with pytest.raises(ValueError):
        HeedfulApp()


async def test_quitting_while_the_model_loads_leaves_quietly(tmp_path):
    go, opened = threading.Event(), []

    def opener():
        assert go.wait(60)
        opened.append(True)
        raise HeedfulError("never shown: the app has gone")

    app = HeedfulApp(opener=opener, export_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+q")
        await pilot.pause()
        go.set()
    assert opened and app.load_error is None and app.return_code in (0, None)


def test_chat_opens_and_resumes_through_its_opener(cli, tiny_qwen35_dir, tmp_path, monkeypatch):
    """What heedful chat's opener does in the app's worker: a new recorded session, then the
    same one resumed with --session (each closed and reported when the app ends)."""
    seen = []

    def run(self, *a, **k):  # the app's worker, run here: open, then type into the session
        assert self.session is None
        self.open_now()
        if not len(self.session):
            self.session.prompt("Alice met Bob.")
        seen.append((self.recorder.session_id, len(self.session), self.session.text()))

    monkeypatch.setattr(HeedfulApp, "run", run)
    db = tmp_path / "c.db"
    code, _, err = cli("chat", "--db", db, "--model", tiny_qwen35_dir)
    assert code in (0, None) and "session 1 saved" in err, err
    code, _, err = cli("chat", "--db", db, "--model", tiny_qwen35_dir, "--session", 1)
    assert code in (0, None) and "session 1 saved" in err, err
    assert seen[0] == seen[1] and seen[0][2] == "Alice met Bob."
