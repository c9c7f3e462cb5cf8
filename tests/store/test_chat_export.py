"""export --format md of a conversation: a section per turn, named by its role, with its
tokens' states; the template's markup left out of the content; pinned runs name their roles."""

from __future__ import annotations

import io
import re

from heedful.selector.session import Session, SessionConfig
from heedful.store import Store
from heedful.store.export import export


def _chat(tiny_chat, tmp_path):
    store = Store.open(tmp_path / "c.db")
    rec = store.new_session(title="talk")
    s = Session(tiny_chat.model, tiny_chat.tokenizer, config=SessionConfig(model="t", temperature=0, window=16,
                budget=48), recorder=rec)
    s.say("Be brief.", role="system")
    s.say("My locker code is 4721.", pin=["4721"])
    list(s.generate(6, stop_at_eos=True))
    s.say("What is my locker code?")
    rec.close()
    return store, rec.session_id, s


def test_md_of_a_conversation_is_written_by_turn_with_roles(tiny_chat, tmp_path):
    store, sid, s = _chat(tiny_chat, tmp_path)
    out = io.StringIO()
    assert export(store, sid, "all", "md", out) == len(s)
    md = out.getvalue()
    heads = re.findall(r"^## (\w+) \(tokens \[(\d+), (\d+)\): ([^)]*)\)$", md, flags=re.M)
    assert [h[0] for h in heads] == ["system", "user", "assistant", "user"]
    # the turns cover the stream, in order, without a gap
    assert int(heads[0][1]) == 0 and int(heads[-1][2]) == len(s)
    assert all(heads[k][2] == heads[k + 1][1] for k in range(len(heads) - 1))
    assert "pinned" in heads[1][3] and "evicted" in heads[1][3]  # the pin, and the window slid past
    assert "```text\nMy locker code is 4721.\n```" in md and "<|im_start|>" not in md
    store.close()


def test_md_of_the_pinned_tokens_names_their_role(tiny_chat, tmp_path):
    store, sid, s = _chat(tiny_chat, tmp_path)
    out = io.StringIO()
    export(store, sid, "pinned", "md", out)
    assert re.findall(r"^## tokens \[\d+, \d+\) (.*)$", out.getvalue(), flags=re.M) == ["user, pinned"]
    assert "```text\n 4721\n```" in out.getvalue()
    store.close()


def test_a_pin_given_with_a_turn_is_stored_and_survives_a_resume(tiny_chat, tiny_chat_dir, tmp_path):
    from heedful.app.open import resume

    store, sid, s = _chat(tiny_chat, tmp_path)
    assert store.session(sid).state.pins.to_list() == [list(p) for p in s.pins()] != []
    again = resume(store, sid, model=str(tiny_chat_dir), dtype="float32", device="cpu")
    assert again.pins() == s.pins() and again.token_ids == s.token_ids
    again.recorder.close()
    store.close()
