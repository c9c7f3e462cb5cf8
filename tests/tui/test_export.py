"""Export of the pinned context (key e, the palette): where it goes and what it says."""

from __future__ import annotations

import pytest

from heedful.selector.session import Session
from heedful.tui.app import HeedfulApp
from tests.tui.conftest import settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A current directory that must stay empty, and a private data dir."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return cwd


async def _pin_and_export(app, pilot, s) -> str:
    await pilot.press(*"The vault code is 4821. Alice met Bob.", "enter")
    await settle(app, pilot)
    s.pin((1, 4))  # one span of 3 tokens, another of 2
    s.pin((6, 8))
    await pilot.press("e")
    await pilot.pause()
    (note,) = [n.message for n in app._notifications if "export" in n.message]
    return note


async def test_export_goes_to_exports_beside_the_store_and_counts_tokens_and_spans(tiny_qwen35, store, elsewhere):
    rec = store.new_session()
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, recorder=rec, gated=tiny_qwen35.gated)
    app = HeedfulApp(s, store=store, recorder=rec, chunk=5, show_speed=False, ignore_eos=True)
    async with app.run_test(size=(100, 30)) as pilot:
        note = await _pin_and_export(app, pilot, s)
    folder = store.path.parent / "exports"
    assert app.sessions.last_export.parent == folder and app.sessions.last_export.exists()
    assert note == f"exported 5 pinned tokens in 2 spans to {app.sessions.last_export}"
    assert list(elsewhere.iterdir()) == []


async def test_export_without_a_store_goes_to_the_data_dir(tiny_qwen35, tmp_path, elsewhere):
    s = Session(tiny_qwen35.model, tiny_qwen35.tokenizer, gated=tiny_qwen35.gated)
    app = HeedfulApp(s, chunk=5, show_speed=False, ignore_eos=True)
    async with app.run_test(size=(100, 30)) as pilot:
        note = await _pin_and_export(app, pilot, s)
    assert app.sessions.last_export.parent == tmp_path / "data" / "heedful" / "exports"
    assert s.text(1, 4) in app.sessions.last_export.read_text()
    assert note.startswith("exported 5 pinned tokens in 2 spans to ")
    assert list(elsewhere.iterdir()) == []


def test_chat_takes_an_export_folder(tiny_qwen35_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from heedful.cli.chat import chat

    seen = {}
    monkeypatch.setattr(HeedfulApp, "run", lambda self: seen.setdefault("dir", self.export_dir))
    out = CliRunner().invoke(chat, ["--db", str(tmp_path / "c.db"), "--model", str(tiny_qwen35_dir),
                                    "--export-dir", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    assert seen["dir"] == tmp_path / "out"
