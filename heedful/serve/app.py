"""The ASGI application: OpenAI's /v1/models, /v1/chat/completions and /v1/completions
(streamed as server-sent events, or whole), heedful's /v1/sessions endpoints (rest.py),
bearer-token checks in constant time, a bounded request body, OpenAI-style JSON errors.

Generation runs on a worker thread per request (runner.py); a streamed reply reaches the
event loop through a queue, and a client that leaves sets the request's `cancelled` event,
which stops its generation between two tokens (what was generated is committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from heedful.errors import HeedfulError
from heedful.serve import rest
from heedful.serve.protocol import MAX_BODY_BYTES, ApiError, parse_chat, parse_completion, read_body
from heedful.serve.runner import Cancelled, run

log = logging.getLogger("heedful.serve")
_DONE = object()


class Config:
    def __init__(self, *, model_id: str, api_key: str | None = None, max_tokens: int = 4096,
                 default_max_tokens: int = 512, max_requests: int = 64, cors: list[str] | None = None):
        self.model_id, self.api_key = model_id, api_key
        self.max_tokens, self.default_max_tokens = max_tokens, default_max_tokens
        self.max_requests, self.cors = max_requests, cors or []


def error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class Guard:
    """ASGI middleware: the bearer token (constant-time compare) and the body-size bound,
    before any route runs; every refusal is an OpenAI-style JSON error."""

    def __init__(self, app, api_key: str | None):
        self.app, self.key = app, (api_key.encode() if api_key else None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope.get("method") != "OPTIONS":
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, self.key):
                resp = error(ApiError("missing or wrong API key (Authorization: Bearer KEY)", 401, None,
                                      "authentication_error", "invalid_api_key"))
                return await resp(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > MAX_BODY_BYTES
            except ValueError:
                too_big = True
            if too_big:
                resp = error(ApiError(f"request body: over the limit of {MAX_BODY_BYTES:,} bytes", 413, "body",
                                      code="request_too_large"))
                return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class Server:
    def __init__(self, pool, config: Config):
        self.pool, self.config = pool, config
        self._slots = threading.BoundedSemaphore(config.max_requests)

    # ---------------------------------------------------------------- OpenAI routes
    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.config.model_id, "object": "model", "created": 0, "owned_by": "heedful"}]})

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Request, chat: bool) -> Response:
        c = self.config
        body = await read_body(request)
        parse = parse_chat if chat else parse_completion
        req = parse(body, c.model_id, request.headers.get("x-heedful-session"), c.max_tokens, c.default_max_tokens)
        if not self._slots.acquire(blocking=False):
            raise ApiError(f"{c.max_requests} requests in flight already; try again", 503, None, "server_error",
                           "overloaded")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        def work():
            try:
                result = run(self.pool, req, emit if req.sampling.stream else (lambda piece: None), cancelled)
            except BaseException as e:  # handed to the event loop, which answers it
                result = e
            finally:
                self._slots.release()
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, result))

        threading.Thread(target=work, name=f"heedful-serve-{rid}", daemon=True).start()
        if not req.sampling.stream:
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, tuple):
                        break
            except asyncio.CancelledError:
                cancelled.set()
                raise
            result = _raise_or(item[1])
            return JSONResponse(self._whole(rid, chat, req, result), headers=_session_header(result.sid))
        first = await queue.get()  # the first piece, or an error before any: a proper status then
        if isinstance(first, tuple) and isinstance(first[1], BaseException):
            _raise_or(first[1])
        return StreamingResponse(self._events(rid, chat, req, first, queue, cancelled),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _whole(self, rid: str, chat: bool, req, r) -> dict:
        usage = {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                 "total_tokens": r.prompt_tokens + r.completion_tokens}
        finish = "length" if r.finish == "cancelled" else r.finish
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": r.text}, "finish_reason": finish,
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": r.text, "finish_reason": finish, "logprobs": None}
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.config.model_id, "choices": [choice], "usage": usage, "heedful": _extra(r)}

    async def _events(self, rid: str, chat: bool, req, first, queue: asyncio.Queue, cancelled):
        created, model = int(time.time()), self.config.model_id
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: dict | str, finish=None, **more) -> str:
            if chat:
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
            obj = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice], **more}
            return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"

        item = first
        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""})
            while True:
                if isinstance(item, tuple):
                    result = item[1]
                    break
                yield chunk({"content": item} if chat else item)
                item = await queue.get()
            if isinstance(result, BaseException):
                e = result if isinstance(result, ApiError) else _internal(result)
                yield "data: " + json.dumps(e.body()) + "\n\n"
            else:
                finish = "length" if result.finish == "cancelled" else result.finish
                yield chunk({} if chat else "", finish, heedful=_extra(result))
                if req.sampling.include_usage:
                    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                             "total_tokens": result.prompt_tokens + result.completion_tokens}
                    obj = {"id": rid, "object": kind, "created": created, "model": model, "choices": [],
                           "usage": usage}
                    yield "data: " + json.dumps(obj) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # the client left (or the stream ended): generation stops between two tokens


def _session_header(sid) -> dict:
    return {"X-Heedful-Session": str(sid)} if sid else {}


def _extra(r) -> dict:
    return {**r.report, "prefill_tokens": r.prefill_tokens, "rebuilt_tokens": r.rebuilt, "continued": r.continued,
            "marked": r.marked, "first_token_s": None if r.first_token_s is None else round(r.first_token_s, 4)}


def _internal(e: BaseException) -> ApiError:
    log.error("request failed", exc_info=e)
    return ApiError(f"internal error: {type(e).__name__}", 500, None, "server_error", "internal")


def _raise_or(result):
    if isinstance(result, Cancelled):
        raise ApiError("the client left", 499, None, code="cancelled")
    if isinstance(result, HeedfulError) and not isinstance(result, ApiError):
        raise ApiError(str(result), 400)
    if isinstance(result, BaseException):
        raise result
    return result


async def _api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return error(exc)
    if isinstance(exc, HeedfulError):
        return error(ApiError(str(exc), 400))
    return error(_internal(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    kind = "not found" if code == 404 else "method not allowed" if code == 405 else "refused"
    return error(ApiError(f"{request.method} {request.url.path}: {kind}", code, None, code="not_found" if code == 404
                          else "bad_request"))


def make_app(pool, config: Config) -> Starlette:
    s = Server(pool, config)
    routes = [
        Route("/v1/models", s.models, methods=["GET"]),
        Route("/v1/chat/completions", s.chat, methods=["POST"]),
        Route("/v1/completions", s.completions, methods=["POST"]),
        *rest.routes(pool),
    ]
    middleware = [Middleware(Guard, api_key=config.api_key)]
    if config.cors:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=config.cors, allow_methods=["GET", "POST",
                          "DELETE"], allow_headers=["Authorization", "Content-Type", "X-Heedful-Session"]))
    handlers = {ApiError: _api_error, HeedfulError: _api_error, Exception: _api_error, 404: _not_found,
                405: _not_found}
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.close()

    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
