"""The OpenAI wire format, checked: a request body becomes a ChatRequest or a
CompletionRequest, or an ApiError that names the field at fault (OpenAI's `param`) and
carries a 4xx status. Nothing here touches a session, so a refused request changes nothing.

heedful's own fields ride in one extra object, `"heedful": {...}` (Extras), which a plain
OpenAI client never sends and whose answer (`"heedful"` in the response) it ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from heedful.errors import HeedfulError
from heedful.limits import MAX_INT, MAX_PROMPT_CHARS, is_finite_number

MAX_BODY_BYTES = 4 * MAX_PROMPT_CHARS + 65_536  # a request body (a prompt at its limit, escaped)
MAX_MESSAGES = 4096  # messages in one chat request
MAX_STOPS = 4  # OpenAI's limit on `stop` strings
MAX_TARGETS = 64  # pins, drops, ... in one request's "heedful" object
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(HeedfulError):
    """A request the server refuses: an OpenAI-style error object with a 4xx (or 503) status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.type, self.code = status, param, type_, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str, code: str | None = None) -> ApiError:
    return ApiError(f"{param}: {message}", 400, param, code=code)


@dataclass
class Extras:
    """The `"heedful"` object: which session, and the marks to make before generating."""
    session: int | None = None
    append: bool = False  # messages are only the new turns of `session`
    new: bool = False  # a new session even when the history extends a stored one
    pin: list = field(default_factory=list)
    unpin: list = field(default_factory=list)
    drop: list = field(default_factory=list)
    recall: list = field(default_factory=list)
    fold: list = field(default_factory=list)  # (target, gist or None)
    settings: dict = field(default_factory=dict)  # window, budget

    def marks(self) -> bool:
        return bool(self.pin or self.unpin or self.drop or self.recall or self.fold)


@dataclass
class Sampling:
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]  # {"role": system|user|assistant, "content": str}
    sampling: Sampling
    extras: Extras


@dataclass
class CompletionRequest:
    model: str
    prompt: str
    sampling: Sampling
    extras: Extras


def parse_json(raw: bytes) -> dict:
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(f"request body: {len(raw):,} bytes is over the limit of {MAX_BODY_BYTES:,}", 413, "body",
                       code="request_too_large")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(f"request body: not JSON ({str(e).splitlines()[0][:120]})", 400, "body",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError("request body: must be a JSON object", 400, "body", code="invalid_json")
    return body


async def read_body(request) -> dict:
    """A Starlette request's body, read up to the limit (a chunked body without a length is
    counted as it comes), as a JSON object."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(f"request body: over the limit of {MAX_BODY_BYTES:,} bytes", 413, "body",
                           code="request_too_large")
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


def _int(body: dict, name: str, lo: int, hi: int, default=None, where: str = "") -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise bad(where + name, f"must be an integer from {lo:,} to {hi:,} (got {json.dumps(v)[:40]})")
    return v


def _num(body: dict, name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if not is_finite_number(v) or not lo <= v <= hi:
        raise bad(name, f"must be a number from {lo} to {hi} (got {json.dumps(v)[:40]})")
    return float(v)


def _bool(body: dict, name: str, where: str = "") -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad(where + name, f"must be true or false (got {json.dumps(v)[:40]})")
    return v


def _text(v, param: str, empty_ok: bool = False) -> str:
    if not isinstance(v, str):
        raise bad(param, f"must be a string (got {type(v).__name__})")
    if not empty_ok and not v.strip():
        raise bad(param, "must not be empty")
    if len(v) > MAX_PROMPT_CHARS:
        raise bad(param, f"{len(v):,} characters is over the limit of {MAX_PROMPT_CHARS:,}", "context_length_exceeded")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad(param, f"invalid Unicode (lone surrogate at character {e.start})") from None
    return v


def _sampling(body: dict, max_tokens_limit: int, default_max: int) -> Sampling:
    n = _int(body, "n", 1, 1)
    del n  # one choice per request
    limit = max_tokens_limit
    mt = _int(body, "max_completion_tokens", 0, limit)
    if mt is None:
        mt = _int(body, "max_tokens", 0, limit, default_max)
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= MAX_STOPS:
        stops = stop
    else:
        raise bad("stop", f"must be a string or a list of at most {MAX_STOPS} strings")
    for i, s in enumerate(stops):
        _text(s, f"stop[{i}]" if isinstance(stop, list) else "stop")
    if body.get("logprobs") not in (None, False):
        raise bad("logprobs", "not supported by this server")
    for name in ("tools", "functions", "tool_choice", "function_call"):
        if body.get(name) not in (None, [], "none"):
            raise bad(name, "tools are not supported by this server")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in (None, "text")):
        raise bad("response_format", "only {\"type\": \"text\"} is supported")
    for name in ("presence_penalty", "frequency_penalty"):
        _num(body, name, -2.0, 2.0)  # accepted and not applied (docs/serve.md)
    _int(body, "seed", -MAX_INT - 1, MAX_INT)  # accepted; a session's sampler is seeded when it opens
    for name in ("user",):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad(name, "must be a string")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad("stream_options", "must be an object")
    from heedful.selector.config import MIN_TEMPERATURE

    temperature = _num(body, "temperature", 0.0, 2.0)
    if temperature is not None and 0 < temperature < MIN_TEMPERATURE:  # logits / T would overflow
        raise bad("temperature", f"must be 0 (greedy) or a number from {MIN_TEMPERATURE} to 2.0 "
                                 f"(got {json.dumps(body['temperature'])[:40]})")
    return Sampling(max_tokens=mt, temperature=temperature,
                    top_p=_num(body, "top_p", 0.0, 1.0), stop=stops, stream=_bool(body, "stream"),
                    include_usage=_bool(opts or {}, "include_usage", "stream_options."))


def _targets(v, param: str) -> list:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or len(v) > MAX_TARGETS:
        raise bad(param, f"must be a string or a list of at most {MAX_TARGETS} strings (text, or /regex/)")
    return [_text(t, f"{param}[{i}]") for i, t in enumerate(v)]


SETTINGS = ("window", "budget")
EXTRA_KEYS = ("session", "append", "new", "pin", "unpin", "drop", "recall", "fold", *SETTINGS)


def parse_extras(body: dict, header_session: str | None) -> Extras:
    h = body.get("heedful")
    if h is None:
        h = {}
    if not isinstance(h, dict):
        raise bad("heedful", "must be an object")
    unknown = sorted(set(h) - set(EXTRA_KEYS))
    if unknown:
        raise bad(f"heedful.{unknown[0]}", f"unknown field (known: {', '.join(EXTRA_KEYS)})")
    ex = Extras(append=_bool(h, "append", "heedful."), new=_bool(h, "new", "heedful."))
    ex.session = _int(h, "session", 1, MAX_INT, where="heedful.")
    if header_session is not None:
        try:
            sid = int(header_session)
            if not 1 <= sid <= MAX_INT:
                raise ValueError
        except ValueError:
            raise bad("X-Heedful-Session", f"must be a session id (got {header_session[:40]!r})") from None
        if ex.session is not None and ex.session != sid:
            raise bad("heedful.session", f"{ex.session} differs from the X-Heedful-Session header ({sid})")
        ex.session = sid
    if ex.new and ex.session is not None:
        raise bad("heedful.new", "a new session cannot also name one (heedful.session)")
    if ex.append and ex.session is None:
        raise bad("heedful.append", "needs a session (heedful.session or the X-Heedful-Session header)")
    for name in ("pin", "unpin", "drop", "recall"):
        if h.get(name) is not None:
            setattr(ex, name, _targets(h[name], f"heedful.{name}"))
    folds = h.get("fold")
    if folds is not None:
        if not isinstance(folds, list) or len(folds) > MAX_TARGETS:
            raise bad("heedful.fold", f"must be a list of at most {MAX_TARGETS} targets or {{target, gist}} objects")
        for i, f in enumerate(folds):
            p = f"heedful.fold[{i}]"
            if isinstance(f, dict):
                if set(f) - {"target", "gist"}:
                    raise bad(p, "an object with target and, optionally, gist")
                gist = f.get("gist")
                ex.fold.append((_text(f.get("target"), p + ".target"),
                                None if gist is None else _text(gist, p + ".gist")))
            else:
                ex.fold.append((_text(f, p), None))
    for name in SETTINGS:
        v = _int(h, name, 1, MAX_INT, where="heedful.")
        if v is not None:
            ex.settings[name] = v
    return ex


def _content(v, param: str) -> str:
    """A message's content: a string, or a list of text parts (OpenAI's content parts)."""
    if isinstance(v, list):
        parts = []
        for i, p in enumerate(v):
            if not isinstance(p, dict) or p.get("type") != "text":
                raise bad(f"{param}[{i}]", "only text parts ({\"type\": \"text\", \"text\": ...}) are supported")
            parts.append(_text(p.get("text"), f"{param}[{i}].text", empty_ok=True))
        v = "".join(parts)
    return _text(v, param, empty_ok=True)


def _model(body: dict, served: str) -> str:
    m = body.get("model", served)
    if not isinstance(m, str):
        raise bad("model", "must be a string")
    if m not in (served, "heedful"):
        raise ApiError(f"model {m[:80]!r}: this server serves {served!r} (GET /v1/models)", 404, "model",
                       code="model_not_found")
    return m


def parse_chat(body: dict, served: str, header_session: str | None, max_tokens_limit: int,
               default_max: int) -> ChatRequest:
    model = _model(body, served)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages", "must be a non-empty list of {role, content} objects")
    if len(msgs) > MAX_MESSAGES:
        raise bad("messages", f"{len(msgs):,} messages is over the limit of {MAX_MESSAGES:,}")
    out, total = [], 0
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(p, "must be an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise bad(p + ".role", f"{json.dumps(role)[:40]} is not one of {', '.join(ROLES)}")
        content = _content(m.get("content"), p + ".content")
        total += len(content)
        if total > MAX_PROMPT_CHARS:
            raise bad("messages", f"over {MAX_PROMPT_CHARS:,} characters in all", "context_length_exceeded")
        out.append({"role": ROLES[role], "content": content})
    if out[-1]["role"] != "user":
        raise bad(f"messages[{len(out) - 1}].role", "the last message must be the user's (the reply is the "
                                                    "assistant's)")
    return ChatRequest(model, out, _sampling(body, max_tokens_limit, default_max), parse_extras(body, header_session))


def parse_completion(body: dict, served: str, header_session: str | None, max_tokens_limit: int,
                     default_max: int) -> CompletionRequest:
    model = _model(body, served)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "must be a string (one prompt per request)")
    if body.get("echo"):
        raise bad("echo", "not supported by this server")
    if body.get("suffix") is not None:
        raise bad("suffix", "not supported by this server")
    return CompletionRequest(model, _text(prompt, "prompt"), _sampling(body, max_tokens_limit, default_max),
                             parse_extras(body, header_session))


def parse_target(text: str, param: str):
    """`/regex/` is a regex (compiled with the engine's timeout); anything else is literal text."""
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        from heedful.selector.targets import compile_regex

        try:
            return compile_regex(text[1:-1])
        except HeedfulError as e:
            raise bad(param, f"bad regex: {e}") from None
    return text
