"""Bad requests get an OpenAI-style JSON error with a 4xx status that names the field, never
a traceback, and the session they name is unchanged (its tokens and its event log)."""

from __future__ import annotations

import httpx
import pytest

from heedful.serve.protocol import MAX_BODY_BYTES
from tests.serve.conftest import serve

USER = [{"role": "user", "content": "Remember the word heron."}]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def sid(http):
    r = http.post("/chat/completions", json={"model": "tiny", "messages": USER, "max_tokens": 4,
                                             "heedful": {"new": True}})
    assert r.status_code == 200, r.text
    return r.json()["heedful"]["session"]


def snapshot(server, sid):
    data = server.store.load(sid)
    return data.token_ids, server.store.events(sid), list(data.info.state.pins)


def error(r, status: int, param: str | None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["param"] == param, body
    assert "Traceback" not in r.text and body["error"]["message"]
    return body["error"]


CASES = [
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, 400,
     "messages[1].role"),
    ({"messages": USER, "max_tokens": "many"}, 400, "max_tokens"),
    ({"messages": USER, "max_tokens": 10**9}, 400, "max_tokens"),
    ({"messages": USER, "temperature": "hot"}, 400, "temperature"),
    ({"messages": USER, "stream": "yes"}, 400, "stream"),
    ({"messages": USER, "stop": [1]}, 400, "stop[0]"),
    ({"messages": USER, "n": 3}, 400, "n"),
    ({"messages": USER, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": USER, "model": "gpt-4o"}, 404, "model"),
    ({"messages": USER, "heedful": []}, 400, "heedful"),
    ({"messages": USER, "heedful": {"pins": ["x"]}}, 400, "heedful.pins"),
    ({"messages": USER, "heedful": {"pin": 5}}, 400, "heedful.pin"),
    ({"messages": USER, "heedful": {"budget": "big"}}, 400, "heedful.budget"),
    ({"messages": USER, "heedful": {"session": 10**6}}, 404, "heedful.session"),
    ({"messages": USER, "heedful": {"pin": ["/(unclosed/"]}}, 400, "heedful.pin[0]"),
    ({"messages": [{"role": "user", "content": "x"}] * 4097}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 1_000_001}]}, 400, "messages[0].content"),
]


@pytest.mark.parametrize("body, status, param", CASES, ids=[c[2] for c in CASES])
def test_bad_fields_are_named(http, body, status, param):
    error(http.post("/chat/completions", json={"model": "tiny", **body}), status, param)


def test_malformed_json_and_a_huge_body(http):
    error(http.post("/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}),
          400, "body")
    error(http.post("/chat/completions", content=b"[1, 2]"), 400, "body")
    error(http.post("/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1)), 413, "body")

    def chunks():  # no Content-Length: counted as it comes
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    error(http.post("/chat/completions", content=chunks()), 413, "body")
    r = http.get("/nowhere")
    assert r.status_code == 404 and "error" in r.json()


def test_refused_marks_and_histories_leave_the_session_unchanged(server, http, sid):
    before = snapshot(server, sid)
    history = http.get(f"/sessions/{sid}").json()["messages"]
    assert history[0] == USER[0] and history[1]["role"] == "assistant"
    more = history + [{"role": "user", "content": "What was the word?"}]
    # a pin that matches nothing: refused after the new turn was appended, which is undone
    e = error(http.post("/chat/completions", json={"messages": more, "heedful": {"session": sid,
                                                                                  "pin": ["heron", "zebra"]}}),
              400, "heedful.pin[1]")
    assert "zebra" in e["message"]
    assert snapshot(server, sid) == before
    # a history that contradicts the stored session
    wrong = [{"role": "user", "content": "Remember the word crane."}] + more[1:]
    error(http.post("/chat/completions", json={"messages": wrong, "heedful": {"session": sid}}), 409, "messages[0]")
    error(http.post("/chat/completions", json={"messages": wrong[:1], "heedful": {"session": sid}}), 409,
          "messages[0]")
    error(http.post("/chat/completions", json={"messages": USER}, headers={"X-Heedful-Session": "abc"}), 400,
          "X-Heedful-Session")
    # a budget the pins cannot fit in
    error(http.post("/chat/completions", json={"messages": more, "heedful": {"session": sid, "budget": 2}}),
          400, "heedful.budget")
    error(http.post(f"/sessions/{sid}/pins", json={"pin": ["/nothing here/"]}), 400, "pin[0]")
    error(http.post(f"/sessions/{sid}/pins", json={"pins": ["heron"]}), 400, "pins")
    error(http.get(f"/sessions/{sid}/export?what=everything"), 400, "what")
    error(http.get("/sessions/999999/pins"), 404, "session")
    assert snapshot(server, sid) == before
    # and the session still answers: the same history, accepted
    r = http.post("/chat/completions", json={"messages": more, "max_tokens": 2, "heedful": {"pin": ["heron"]}})
    assert r.status_code == 200, r.text
    h = r.json()["heedful"]
    assert h["session"] == sid and h["marked"]["pin"] and any("heron" in p["text"] for p in h["pins"])
    pins = http.get(f"/sessions/{sid}/pins").json()["data"]
    assert [p["text"] for p in pins] == [" heron"] or [p["text"].strip() for p in pins] == ["heron"]


def test_errors_name_the_request_fields_not_the_cli_flags(server, http, sid):
    before = snapshot(server, sid)
    window = server.pool.settings["window"]

    def words(r, status, param, start):
        e = error(r, status, param)
        assert e["message"].startswith(start), e
        assert "--" not in e["message"] and "set:" not in e["message"], e
        return e["message"]

    # /marks takes the marks as top-level fields: its errors name them so
    words(http.post(f"/sessions/{sid}/marks", json={"budget": 8}), 400, "budget",
          f"budget: budget 8 is smaller than window {window} + sinks")
    words(http.post(f"/sessions/{sid}/marks", json={"drop": ["zebra"]}), 400, "drop[0]", "drop[0]: ")
    more = [{"role": "user", "content": "And?"}]
    words(http.post("/chat/completions", json={"messages": more, "heedful": {"session": sid, "append": True,
                                                                             "budget": 8}}), 400,
          "heedful.budget", f"heedful.budget: budget 8 is smaller than window {window}")
    m = words(http.get(f"/sessions/{sid}/export?what=events&format=md"), 400, "format", "format: ")
    assert "format=jsonl" in m
    m = words(http.post("/chat/completions", json={"messages": USER, "temperature": 1e-300}), 400, "temperature",
              "temperature: must be 0 (greedy) or a number from ")
    assert m.count("temperature") == 1
    m = words(http.post("/chat/completions", json={"messages": USER, "seed": 2**64}), 400, "seed",
              "seed: must be an integer from -9,223,372,036,854,775,808 to 9,223,372,036,854,775,807")
    assert snapshot(server, sid) == before


def test_an_api_key_is_required_when_set_and_cors_is_off(tiny_chat, tmp_path):
    running = serve(tiny_chat, tmp_path / "auth.db", api_key="s3cret")
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            error(c.get("/models"), 401, None)
            error(c.get("/models", headers={"Authorization": "Bearer wrong"}), 401, None)
            r = c.get("/models", headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny"
            r = c.options("/models", headers={"Origin": "http://127.0.0.2:9", "Access-Control-Request-Method": "GET"})
            assert "access-control-allow-origin" not in r.headers
    finally:
        running.stop()
        running.store.close()


def test_serve_refuses_a_bad_size_in_one_line_and_warns_off_loopback_without_a_key(cli):
    code, out, err = cli("serve", "--max-kv-bytes", "lots")
    assert code == 2
    assert err.strip() == "heedful: error: --max-kv-bytes 'lots': a size such as 512MiB, 2GiB or 100000000"
    code, out, err = cli("serve", "--host", "0.0.0.0", "--max-kv-bytes", "lots")
    assert code == 2 and err.startswith("heedful: warning: serving on 0.0.0.0 without --api-key")
    code, out, err = cli("serve", "--host", "0.0.0.0", "--api-key", "k", "--max-kv-bytes", "lots")
    assert code == 2 and "warning" not in err


def test_cors_answers_only_the_origins_given(tiny_chat, tmp_path):
    from heedful.serve.app import Config, make_app
    from heedful.serve.pool import Pool
    from heedful.store import Store
    from tests.serve.conftest import SETTINGS, Running

    store = Store.open(tmp_path / "cors.db")
    app = make_app(Pool(tiny_chat, store, SETTINGS, max_kv_bytes=1 << 30),
                   Config(model_id="tiny", cors=["http://127.0.0.1:5173"]))
    running = Running(app)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            preflight = {"Access-Control-Request-Method": "GET"}
            ok = c.options("/models", headers={"Origin": "http://127.0.0.1:5173", **preflight})
            assert ok.headers.get("access-control-allow-origin") == "http://127.0.0.1:5173"
            other = c.options("/models", headers={"Origin": "http://127.0.0.2:9", **preflight})
            assert "access-control-allow-origin" not in other.headers
    finally:
        running.stop()
        store.close()
