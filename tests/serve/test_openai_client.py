"""The `openai` package against `heedful serve` on loopback: the streamed and the whole
answer equal `heedful generate --chat` (greedy), a growing history continues one session
and re-encodes only the new turn, a client that leaves mid-stream stops its generation and
what was generated is stored."""

from __future__ import annotations

import time

import pytest

from tests.serve.conftest import SETTINGS, integrity, stored_messages

openai = pytest.importorskip("openai")

SYSTEM = "You answer briefly."
QUESTION = "The locker code is 7310. What is the locker code?"


def client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key=kw.pop("api_key", "none"), max_retries=0, timeout=60, **kw)


def cli_answer(cli, model_dir, n: int) -> str:
    code, out, err = cli("generate", QUESTION, "--chat", "--system", SYSTEM, "--model", model_dir, "--dtype",
                         "float32", "--device", "cpu", "-n", n, "--window", SETTINGS["window"], "--budget",
                         SETTINGS["budget"])
    assert code == 0, err
    assert out.endswith("\n")
    return out[:-1]  # the summary's newline


def test_streamed_and_whole_answers_equal_generate_chat(server, cli, tiny_chat_dir):
    expected = cli_answer(cli, tiny_chat_dir, 24)
    assert expected  # something to compare
    c = client(server)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    stream = c.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0, stream=True,
                                       extra_body={"heedful": {"new": True}})
    pieces, finish, extra = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
            extra = (chunk.model_extra or {}).get("heedful", extra)
    assert "".join(pieces) == expected
    assert finish in ("stop", "length")
    assert extra["session"] >= 1 and extra["resident"] <= SETTINGS["budget"]

    whole = c.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                      extra_body={"heedful": {"new": True}})
    assert whole.choices[0].message.content == expected
    assert whole.usage.completion_tokens >= 1
    assert whole.model_extra["heedful"]["session"] != extra["session"]  # heedful.new: a session of its own
    # the store holds the conversation as it was answered
    assert stored_messages(server.db, extra["session"])[-1] == {"role": "assistant", "content": expected}


def test_a_growing_history_continues_one_session_and_encodes_only_the_new_turn(server):
    c = client(server)
    messages, sid, prefills, turn_tokens = [], None, [], []
    for i in range(8):
        messages.append({"role": "user", "content": f"Turn {i}: tell me about the number {i * 7}."})
        r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
        h = r.model_extra["heedful"]
        if sid is None:
            sid = h["session"]
        else:
            assert h["session"] == sid and h["continued"]
        prefills.append(h["prefill_tokens"])
        turn_tokens.append((h["tokens"], r.usage.completion_tokens))
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
    # each request after the first encodes exactly its new turn (the text with the template's markup):
    # the tokens the stream grew by, less the reply; never the history again
    for i in range(1, len(prefills)):
        (before, _), (after, completion) = turn_tokens[i - 1], turn_tokens[i]
        assert prefills[i] == after - before - completion
    assert max(prefills[1:]) * 4 < turn_tokens[-1][0]
    assert [m["content"].strip() for m in stored_messages(server.db, sid)] == [m["content"].strip() for m in messages]


def test_a_client_that_leaves_mid_stream_stops_and_the_reply_so_far_is_stored(server):
    c = client(server)
    stream = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Count slowly."}],
                                       max_tokens=256, temperature=0, stream=True,
                                       extra_body={"heedful": {"new": True}})
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    stream.close()
    deadline, events, sid = time.monotonic() + 20, [], None
    while time.monotonic() < deadline:  # the worker commits once it sees the client gone
        mine = [i for i in server.store.sessions() if i.title == "serve: Count slowly."]
        if mine:
            sid = mine[-1].id
            events = [e["op"] for e in server.store.events(sid)]
            if "stop" in events:
                break
        time.sleep(0.05)
    assert "stop" in events, events  # the generate was cut short, and logged so
    msgs = stored_messages(server.db, sid)
    assert msgs[0] == {"role": "user", "content": "Count slowly."}
    generated = server.store.load(sid).token_sources.count("generated")
    uncut = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Count slowly."}],
                                      max_tokens=256, temperature=0, extra_body={"heedful": {"new": True}})
    assert 3 <= generated < uncut.usage.completion_tokens  # it stopped when the client left
    assert integrity(server.db) == {"integrity": "ok", "gaps": []}


def test_requests_to_one_session_are_serialized(server):
    import threading

    c = client(server)
    first = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Start."}], max_tokens=2,
                                      extra_body={"heedful": {"new": True}})
    sid = first.model_extra["heedful"]["session"]
    answers, errors = {}, []

    def ask(k: int) -> None:
        try:
            r = client(server).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"Question {k}."}], max_tokens=5, stream=k % 2 == 0,
                extra_body={"heedful": {"session": sid, "append": True}})
            if k % 2 == 0:
                answers[k] = "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)
            else:
                answers[k] = r.choices[0].message.content
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    msgs = stored_messages(server.db, sid)[2:]
    # whole turns one after another, each question followed by its own answer, none interleaved
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 4
    for q, a in zip(msgs[::2], msgs[1::2]):
        k = int(q["content"].split()[1].rstrip("."))
        assert a["content"] == answers[k]


def test_completions_equal_generate_and_continue_a_named_session(server, cli, tiny_chat_dir):
    prompt = "The vault code is 4821. The vault code is"
    code, expected, err = cli("generate", prompt, "--model", tiny_chat_dir, "--dtype", "float32", "--device", "cpu",
                              "-n", 10, "--window", SETTINGS["window"], "--budget", SETTINGS["budget"])
    assert code == 0, err
    c = client(server)
    r = c.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
    assert r.choices[0].text == expected[:-1]
    h = r.model_extra["heedful"]
    assert not h["continued"] and h["prefill_tokens"] == h["tokens"] - r.usage.completion_tokens
    more = c.completions.create(model="tiny", prompt=" And then", max_tokens=3, stream=False,
                                extra_body={"heedful": {"session": h["session"], "pin": ["4821"]}})
    h2 = more.model_extra["heedful"]
    assert h2["session"] == h["session"] and h2["continued"]
    assert h2["prefill_tokens"] == h2["tokens"] - h["tokens"] - more.usage.completion_tokens
    assert [p["text"] for p in h2["pins"]] == [" 4821"] or [p["text"].strip() for p in h2["pins"]] == ["4821"]
