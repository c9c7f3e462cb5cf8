"""The generation worker: where a stream stops and what the person is told."""

from __future__ import annotations

import pytest

from tests.tui.conftest import chat_app, settle

pytestmark = pytest.mark.anyio


async def test_a_stream_stops_at_the_end_of_text_token_and_says_so(tiny_qwen35, store, tmp_path):
    """As `heedful generate` does: the model's <|endoftext|> ends the answer; g goes on."""
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=20)
    s = app.session
    eos = tiny_qwen35.tokenizer.eos_token_id
    sample, calls = s._sampler, {"n": 0}

    def ends_at_the_fifth(*a, **k):
        calls["n"] += 1
        tid = sample(*a, **k)
        return eos if calls["n"] == 5 else (tid if tid != eos else tid + 1)

    s._sampler = ends_at_the_fifth
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")
        await settle(app, pilot)
        assert s.stats().generated == 5 and s.token_ids[-1] == eos and not app.generating
        assert any("end of text" in n.message and "g" in n.message for n in app._notifications)
        await pilot.press("g")
        await settle(app, pilot)
        assert s.stats().generated == 25
    events = store.events(app.recorder.session_id)
    assert [e["op"] for e in events].count("stop") == 1


async def test_ignore_eos_goes_on_past_the_end_of_text(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=20, ignore_eos=True)
    s = app.session
    eos = tiny_qwen35.tokenizer.eos_token_id
    sample, calls = s._sampler, {"n": 0}

    def ends_at_the_fifth(*a, **k):
        calls["n"] += 1
        return eos if calls["n"] == 5 else sample(*a, **k)

    s._sampler = ends_at_the_fifth
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")
        await settle(app, pilot)
        assert s.stats().generated == 20 and s.token_ids[-16] == eos
        assert not any("end of text" in n.message for n in app._notifications)


async def test_a_new_prompt_is_separated_from_the_text_by_one_space(tiny_qwen35, store, tmp_path):
    app = chat_app(tiny_qwen35, store, tmp_path, chunk=3, ignore_eos=True)
    s = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"Alice met Bob.", "enter")  # the first prompt: as typed
        await settle(app, pilot)
        carol = "Carol" if s.text()[-1].isspace() else " Carol"  # the generated text decides
        await pilot.press("tab", *"Carol", "enter")
        await settle(app, pilot)
        await pilot.press("tab", " ", *"Dave", "enter")  # typed with its own space
        await settle(app, pilot)
        s.prompt("Eve\n")
        await pilot.press("tab", *"Frank", "enter")  # the text ends with whitespace
        await settle(app, pilot)
    prompts = [e["text"] for e in store.events(app.recorder.session_id) if e["op"] == "prompt"]
    assert prompts == ["Alice met Bob.", carol, " Dave", "Eve\n", "Frank"]
    assert carol == " Carol"  # (the tiny model's three tokens end without a space)


def test_chat_ignore_eos_reaches_the_app(tiny_qwen35_dir, tmp_path, monkeypatch):
    """`heedful chat --ignore-eos`: the app generates past the end-of-text token."""
    import heedful.cli
    from heedful.tui.app import HeedfulApp

    seen = []
    monkeypatch.setattr(HeedfulApp, "run", lambda self, *a, **k: seen.append(self.ignore_eos))
    for flags in ([], ["--ignore-eos"]):
        with pytest.raises(SystemExit) as e:
            heedful.cli.main(["chat", "--db", str(tmp_path / "chat.db"), "--model", str(tiny_qwen35_dir), *flags])
        assert e.value.code in (0, None)
    assert seen == [False, True]
