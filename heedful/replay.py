"""Replay scripts and resume: reading the store's log back into a running engine.

A replay script is JSON Lines in the event-log shape (DESIGN.md, "Replay scripts"), so an
exported session (`heedful export --what events`) is itself a script. The whole script is
validated before anything runs; a script that fails while it runs (a pin whose text never
appears) is reported the same way, FILE:LINE: reason. The run records into an atomic
recorder that touches the database only once the whole script has succeeded, so a replay
lands whole or not at all.

Operations made while a `generate` streams carry "at" (the stream length when they took
effect); they follow their generate in the script and are applied between the same two
tokens. A `stop` at L cuts the generate short at L tokens. A `resume` (logged when a
session is reopened from the store) rebuilds the engine with Session.restore from the
first "tokens" tokens, as the original resume did, so the token ids after it match too.

This module sits above both the engine and the store (the store never drives the engine).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from heedful.errors import HeedfulError

OPS = ("config", "resume", "prompt", "generate", "stop", "pin", "unpin", "drop", "recall", "rewind", "set")
TARGET_OPS = ("pin", "unpin", "drop", "recall")
AT_OPS = ("prompt", "stop", "pin", "unpin", "drop", "recall", "rewind", "set")  # may carry "at"


@dataclass
class Step:
    line: int
    op: str
    args: dict  # the line without "op"


# ---------------------------------------------------------------------- validation
def _config_fields() -> dict[str, type]:
    from heedful.selector.session import SessionConfig

    return {f.name: f.type for f in dataclasses.fields(SessionConfig)}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_config(cfg, where: str) -> None:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected an object of settings")
    fields = _config_fields()
    for k, v in cfg.items():
        if k not in fields:
            raise ValueError(f"{where}: unknown setting {k!r} (expected one of {', '.join(fields)})")
        kind = str(fields[k])
        if k == "model":
            ok = isinstance(v, str) and v != ""
        elif "float" in kind:
            ok = (_is_int(v) or isinstance(v, float))
        elif "None" in kind:
            ok = v is None or _is_int(v)
        else:
            ok = _is_int(v)
        if not ok:
            raise ValueError(f"{where}: setting {k!r} has the wrong type ({json.dumps(v)})")


def _check_target(op: str, a: dict) -> set[str]:
    keys = [k for k in ("text", "regex", "range") if k in a]
    if len(keys) != 1:
        raise ValueError(f"{op} needs exactly one target field: 'text', 'regex' or 'range'")
    k, v = keys[0], a[keys[0]]
    if k == "text" and not (isinstance(v, str) and v):
        raise ValueError(f"{op}: field 'text' must be a non-empty string")
    if k == "regex":
        if not (isinstance(v, str) and v):
            raise ValueError(f"{op}: field 'regex' must be a non-empty string")
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"{op}: bad regex {v!r}: {e}") from None
    if k == "range":
        if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)):
            raise ValueError(f"{op}: field 'range' must be [start, end] with two integers")
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"{op}: range {v} must satisfy 0 <= start < end")
    allowed = {k}
    if "occurrence" in a:
        occ = a["occurrence"]
        if k != "text":
            raise ValueError(f"{op}: 'occurrence' goes with a 'text' target only")
        if not (_is_int(occ) or occ == "all"):
            raise ValueError(f"{op}: field 'occurrence' must be an integer or \"all\"")
        allowed.add("occurrence")
    return allowed


def check_step(op: str, a: dict) -> None:
    """Raises ValueError(reason) for a line whose fields are wrong."""
    if op == "config":
        _check_config(a, "config")
        return
    allowed: set[str] = set()
    if op in AT_OPS:
        allowed.add("at")
        if "at" in a and not (_is_int(a["at"]) and a["at"] >= 0):
            raise ValueError(f"{op}: field 'at' must be a non-negative integer")
    if op == "resume":
        allowed |= {"tokens", "config"}
        if not (_is_int(a.get("tokens")) and a["tokens"] >= 0):
            raise ValueError("resume: field 'tokens' must be a non-negative integer")
        _check_config(a.get("config", {}), "resume: field 'config'")
    elif op == "prompt":
        allowed.add("text")
        if not (isinstance(a.get("text"), str) and a["text"]):
            raise ValueError("prompt: field 'text' must be a non-empty string")
    elif op == "generate":
        allowed.add("n")
        if not (_is_int(a.get("n")) and a["n"] >= 0):
            raise ValueError("generate: field 'n' must be a non-negative integer")
    elif op == "stop":
        if "at" not in a:
            raise ValueError("stop: field 'at' is missing")
    elif op == "rewind":
        allowed.add("index")
        if not (_is_int(a.get("index")) and a["index"] >= 0):
            raise ValueError("rewind: field 'index' must be a non-negative integer")
    elif op == "set":  # mid-session settings (Session.set)
        allowed |= {"window", "budget", "temperature", "top_p"}
        for k in ("window", "budget"):
            if k in a and not (_is_int(a[k]) and a[k] >= 1):
                raise ValueError(f"set: field {k!r} must be a positive integer")
        for k in ("temperature", "top_p"):
            if k in a and not (_is_int(a[k]) or isinstance(a[k], float)):
                raise ValueError(f"set: field {k!r} must be a number")
    elif op in TARGET_OPS:
        allowed |= _check_target(op, a)
    extra = sorted(set(a) - allowed)
    if extra:
        raise ValueError(f"{op}: unknown field {extra[0]!r}")


def parse_script(path) -> list[Step]:
    """Reads and validates a whole script; raises HeedfulError('FILE:LINE: reason')."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HeedfulError(f"{path}: no such file") from None
    except OSError as e:
        raise HeedfulError(f"{path}: cannot read: {e.strerror}") from None
    if not data.strip():
        raise HeedfulError(f"{path}:1: empty script (expected JSON Lines, one operation per line)")
    lines = data.split(b"\n")
    steps: list[Step] = []
    in_generate = False  # the last step without "at" was a generate
    for k, raw in enumerate(lines, 1):
        last = k == len(lines)

        def bad(reason):
            return HeedfulError(f"{path}:{k}: {reason}")

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise bad(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if last:  # the file does not end with a newline and the line does not parse
                raise bad("truncated last line (incomplete JSON, no newline at the end)") from None
            raise bad(f"not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise bad("expected a JSON object like {\"op\": ...}")
        op = obj.pop("op", None)
        if op is None:
            raise bad("missing field 'op'")
        if op not in OPS:
            raise bad(f"unknown op {json.dumps(op)} (expected one of {', '.join(OPS)})")
        try:
            check_step(op, obj)
        except ValueError as e:
            raise bad(str(e)) from None
        if op == "config" and steps:
            raise bad("config must be the first operation of a script")
        if "at" in obj:
            if not in_generate:
                raise bad(f"{op}: 'at' is only valid right after a generate (for operations made while it streamed)")
            prev_at = steps[-1].args.get("at", 0)
            if obj["at"] < prev_at:
                raise bad(f"{op}: 'at' {obj['at']} goes back before {prev_at}")
        elif op == "stop":
            raise bad("stop: field 'at' is missing")
        steps.append(Step(k, op, obj))
        if "at" not in obj:
            in_generate = op == "generate"
        elif op == "stop":
            in_generate = False
    return steps


# ---------------------------------------------------------------------- running
@dataclass
class ReplayResult:
    session: object  # the Session after the last step
    recorder: object  # the atomic SessionRecorder holding the recording
    results: list[dict]


def _clip(spans, n: int) -> list[tuple[int, int]]:
    return [(a, min(b, n)) for a, b in spans if a < n]


def restore_session(session_cls, lm_model, tokenizer, gated, config: dict, ids, texts, sources, pins, dropped,
                    recorder):
    """Session.restore, then tells the recorder which tokens the engine made resident."""
    s = session_cls.restore(lm_model, tokenizer, config=config, token_ids=ids, token_texts=texts,
                            token_sources=sources, pins=pins, dropped=dropped, recorder=recorder, gated=gated)
    recorder.reset_resident(s.retained())
    return s


class _Runner:
    def __init__(self, path, lm, recorder, on_result):
        self.path, self.lm, self.rec, self.on_result = path, lm, recorder, on_result
        self.session = None
        self.results: list[dict] = []

    def emit(self, step: Step, **result) -> None:
        r = {"line": step.line, "op": step.op, **result}
        self.results.append(r)
        if self.on_result:
            self.on_result(r)

    def config(self, step: Step) -> None:
        from heedful.selector.session import Session, SessionConfig

        cfg = {**step.args, "model": self.lm.name}
        self.session = Session(self.lm.model, self.lm.tokenizer, recorder=self.rec, gated=self.lm.gated,
                               config=SessionConfig(**cfg))
        self.emit(step, config=self.session.config.to_dict())

    def apply(self, step: Step, gen=None) -> bool:
        """Runs one step (not config/generate); returns False when a stop closed `gen`."""
        s, a, op = self.session, step.args, step.op
        if op == "stop":
            if len(s) != a["at"]:
                raise HeedfulError(f"stop at {a['at']}: the stream has {len(s)} tokens")
            gen.close()
            self.emit(step, at=len(s))
            return False
        if op == "prompt":
            r = s.prompt(a["text"])
            self.emit(step, range=[r.start, r.stop])
        elif op in TARGET_OPS:
            target = {k: v for k, v in a.items() if k != "at"}
            ranges = getattr(s, op)(target)
            self.emit(step, ranges=[list(r) for r in ranges])
        elif op == "rewind":
            s.rewind(a["index"])
            self.emit(step, tokens=len(s))
        elif op == "set":
            s.set(**{k: v for k, v in a.items() if k != "at"})
            self.emit(step, config=s.config.to_dict())
        elif op == "resume":
            self.resume(step)
        return True

    def resume(self, step: Step) -> None:
        from heedful.selector.session import Session

        s, n = self.session, step.args["tokens"]
        if n > len(s):
            raise HeedfulError(f"resume at {n} tokens: the stream has only {len(s)}")
        cfg = {**s.config.to_dict(), **step.args.get("config", {}), "model": self.lm.name}
        self.rec.event("resume", {"tokens": n, "config": cfg})
        self.session = restore_session(Session, s.model, s.tokenizer, s.gated, cfg, s.token_ids[:n],
                                       s.token_texts[:n], s.token_sources[:n], _clip(s.pins(), n),
                                       _clip(s.dropped(), n), self.rec)
        self.emit(step, tokens=n)

    def generate(self, step: Step, during: list[Step]) -> None:
        s = self.session
        start = len(s)
        gen = s.generate(step.args["n"])
        pending = list(during)
        ids = []
        try:
            while True:
                while pending and pending[0].args["at"] == len(s):
                    inner = pending.pop(0)
                    with self.at_line(inner):
                        if not self.apply(inner, gen):
                            break
                else:
                    try:
                        ids.append(next(gen).id)
                    except StopIteration:
                        break
                    continue
                break  # a stop closed the stream
        finally:
            gen.close()
        self.emit(step, range=[start, start + len(ids)], ids=ids, text="".join(s.token_texts[start:start + len(ids)]))
        if pending:
            with self.at_line(pending[0]):
                raise HeedfulError(f"{pending[0].op} at {pending[0].args['at']}: the stream never reached that "
                                   f"length (it ended at {len(s)} tokens)")

    def at_line(self, step: Step):
        path = self.path

        class _Ctx:
            def __enter__(self):
                return self

            def __exit__(self, et, e, tb):
                if isinstance(e, HeedfulError) and not str(e).startswith(f"{path}:"):
                    raise HeedfulError(f"{path}:{step.line}: {e}") from None
                return False

        return _Ctx()


def run_script(steps: list[Step], path, *, model: str | None = None, dtype="auto", device=None,
               trust_remote_code=False, on_result=None, lm=None) -> ReplayResult:
    """Runs validated steps into a fresh session recorded atomically (nothing is written
    here: call result.recorder.commit(store) to keep it). Errors: 'FILE:LINE: reason'."""
    from heedful.store import SessionRecorder

    first = steps[0]
    cfg = dict(first.args) if first.op == "config" else {}
    if lm is None:
        from heedful.loading import load_model

        with _Runner(path, None, None, None).at_line(first):
            lm = load_model(model or cfg.get("model"), dtype=dtype, device=device,
                            trust_remote_code=trust_remote_code)
    rec = SessionRecorder(atomic=True)
    runner = _Runner(path, lm, rec, on_result)
    with runner.at_line(first):
        runner.config(Step(first.line, "config", cfg) if first.op == "config" else Step(0, "config", {}))
    rest = steps[1:] if first.op == "config" else steps
    k = 0
    while k < len(rest):
        step = rest[k]
        k += 1
        if step.op == "generate":
            during = []
            while k < len(rest) and "at" in rest[k].args:
                during.append(rest[k])
                k += 1
            with runner.at_line(step):
                runner.generate(step, during)
        else:
            with runner.at_line(step):
                runner.apply(step)
    return ReplayResult(runner.session, rec, runner.results)


# ---------------------------------------------------------------------- resume
def resume(store, session_id: int | None = None, *, model: str | None = None, dtype="auto", device=None,
           trust_remote_code=False, lm=None, **settings):
    """Reopens a stored session: the engine is rebuilt from the stream, pins and drops in
    the store (Session.restore) and continues recording into the same session. `settings`
    (window, budget, ...) override the stored configuration; None values are ignored."""
    from heedful.selector.session import Session

    data = store.load(session_id)
    info = data.info
    cfg = {**info.config, **{k: v for k, v in settings.items() if v is not None}}
    if lm is None:
        from heedful.loading import load_model

        lm = load_model(model or cfg.get("model"), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    cfg["model"] = lm.name
    _check_config(cfg, "resume")
    rec = store.reopen(info.id)
    n = len(data.token_ids)
    rec.event("resume", {"tokens": n, "config": cfg})
    st = info.state
    return restore_session(Session, lm.model, lm.tokenizer, lm.gated, cfg, data.token_ids, data.token_texts,
                           data.token_sources, list(st.pins), list(st.dropped), rec)
