"""heedful's own endpoints beside OpenAI's: the stored sessions, their pins and marks, exports.

    GET  /v1/sessions                     the store's sessions (live ones marked)
    GET  /v1/sessions/{id}                one session: its conversation, pins, what is resident
    GET  /v1/sessions/{id}/pins           its pins, with their text
    POST /v1/sessions/{id}/pins           {"pin": ["text", "/regex/"]}: pin (evicted text is recalled)
    DELETE /v1/sessions/{id}/pins         {"unpin": [...]}
    POST /v1/sessions/{id}/marks          a "heedful" object's marks: pin, unpin, drop, recall, fold, window, budget
    GET  /v1/sessions/{id}/export         ?what=all|pinned|retained|events&format=jsonl|txt|md (store/export.py)
"""

from __future__ import annotations

import asyncio
import io

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from heedful.errors import HeedfulError
from heedful.serve.protocol import ApiError, bad, parse_extras, read_body


def _sid(request: Request) -> int:
    raw = request.path_params["sid"]
    try:
        sid = int(raw)
        if sid < 1:
            raise ValueError
    except ValueError:
        raise ApiError(f"session {raw[:40]!r}: not a session id", 400, "session") from None
    return sid


def _info(pool, sid: int):
    try:
        return pool.store.session(sid)
    except HeedfulError:
        raise ApiError(f"session {sid}: no such session", 404, "session", code="session_not_found") from None


def routes(pool) -> list[Route]:
    async def sessions(request: Request):
        live = set(pool.live_ids())
        infos = await asyncio.to_thread(pool.store.sessions)
        return JSONResponse({"object": "list", "data": [{**i.to_json(), "live": i.id in live} for i in infos]})

    async def session(request: Request):
        sid = _sid(request)
        info = _info(pool, sid)
        out = {**info.to_json(), "live": sid in pool.live_ids()}

        def read():
            from heedful.selector.chat import messages

            data = pool.store.load(sid)
            stops = [pool.lm.tokenizer.decode([t]) for t in pool.stop_ids]
            return messages(data.token_texts, data.token_sources, stops), data.token_texts

        msgs, texts = await asyncio.to_thread(read)
        out["messages"] = msgs if any(m["role"] == "user" for m in msgs) else []
        out["pins"] = [{"range": [a, b], "text": "".join(texts[a:b])[:200]} for a, b in info.state.pins]
        return JSONResponse(out)

    async def pins(request: Request):
        sid = _sid(request)
        info = _info(pool, sid)
        if request.method == "GET":
            texts = (await asyncio.to_thread(pool.store.load, sid)).token_texts
            return JSONResponse({"object": "list", "session": sid, "data": [
                {"range": [a, b], "text": "".join(texts[a:b])[:200]} for a, b in info.state.pins]})
        body = await _body(request)
        allowed = {"POST": "pin", "DELETE": "unpin"}[request.method]
        if set(body) - {allowed}:
            raise bad(sorted(set(body) - {allowed})[0], f"unknown field (this endpoint takes {allowed!r})")
        return await _mark(request, sid, {allowed: body.get(allowed)})

    async def marks(request: Request):
        sid = _sid(request)
        _info(pool, sid)
        return await _mark(request, sid, await _body(request))

    async def _mark(request: Request, sid: int, fields: dict):
        from heedful.serve.runner import mark

        try:
            ex = parse_extras({"heedful": {k: v for k, v in fields.items() if v is not None}}, None)
            if ex.session is not None or ex.append or ex.new:
                raise bad("heedful.session", "the session is the one in the path")
            return JSONResponse(await asyncio.to_thread(mark, pool, sid, ex))
        except ApiError as e:
            raise _top_level(e) from None

    async def export(request: Request):
        from heedful.store.export import FORMATS, WHATS
        from heedful.store.export import export as write

        sid = _sid(request)
        _info(pool, sid)
        what = request.query_params.get("what", "all")
        fmt = request.query_params.get("format", "jsonl")
        if what not in WHATS:
            raise bad("what", f"{what[:40]!r}: one of {', '.join(WHATS)}")
        if fmt not in FORMATS:
            raise bad("format", f"{fmt[:40]!r}: one of {', '.join(FORMATS)}")
        if what == "events" and fmt != "jsonl":
            raise bad("format", "what=events is written as JSON Lines (the replay format): use format=jsonl")
        out = io.StringIO()
        await asyncio.to_thread(write, pool.store, sid, what, fmt, out)
        media = {"jsonl": "application/jsonl", "md": "text/markdown", "txt": "text/plain"}[fmt]
        return PlainTextResponse(out.getvalue(), media_type=media)

    return [
        Route("/v1/sessions", sessions, methods=["GET"]),
        Route("/v1/sessions/{sid}", session, methods=["GET"]),
        Route("/v1/sessions/{sid}/pins", pins, methods=["GET", "POST", "DELETE"]),
        Route("/v1/sessions/{sid}/marks", marks, methods=["POST"]),
        Route("/v1/sessions/{sid}/export", export, methods=["GET"]),
    ]


async def _body(request: Request) -> dict:
    body = await read_body(request)
    if len(body) > 16:
        raise bad("body", "too many fields")
    return body


def _top_level(e: ApiError) -> ApiError:
    """An error about a field of a "heedful" object, for a body whose fields are top-level
    (/marks, /pins): `budget`, `pin[0]`, not `heedful.budget`."""
    if not (e.param or "").startswith("heedful."):
        return e
    param, message = e.param[len("heedful."):], str(e)
    if message.startswith(e.param):
        message = param + message[len(e.param):]
    return ApiError(message, e.status, param, e.type, e.code)
