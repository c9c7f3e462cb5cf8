"""Replay scripts: the format, and its validation before anything runs.

A replay script is JSON Lines in the event-log shape (docs/DESIGN.md, "Replay scripts"), so
an exported session (`heedful export --what events`) is itself a script. The whole script
is validated before anything runs; a bad line is reported as FILE:LINE: reason.

Operations made while a `generate` streams carry "at" (the stream length when they took
effect); they follow their generate in the script. A `stop` at L cuts the generate short at
L tokens. A `resume` (logged when a session is reopened from the store) rebuilds the engine
from the first "tokens" tokens.
"""


from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from heedful.errors import HeedfulError, TargetError
from heedful.limits import MAX_GENERATE, MAX_INT, MAX_SCRIPT_LINE_BYTES, check_text, is_finite_number
from heedful.selector.chat import ROLES
from heedful.selector.config import POOLS, SCORES
from heedful.selector.targets import compile_regex
from heedful.selector.session import SessionConfig

OPS = ("config", "resume", "prompt", "say", "generate", "stop", "pin", "unpin", "drop", "recall", "fold", "unfold",
       "rewind", "set", "accept", "reject")
TARGET_OPS = ("pin", "unpin", "drop", "recall", "fold", "unfold")
NOTE_OPS = ("accept", "reject")  # a picker's suggestion accepted / rejected: logged, no effect on the engine
AT_OPS = ("prompt", "say", "stop", "pin", "unpin", "drop", "recall", "fold", "unfold", "rewind", "set",
          "accept", "reject")  # may carry "at"
BY = ("picker",)  # who made a pin or unpin other than the person ("by"; absent: the person)


@dataclass
class Step:
    line: int
    op: str
    args: dict  # the line without "op"


# ---------------------------------------------------------------------- validation
CHOICES = {"auto_pool": POOLS, "auto_score": SCORES}  # settings that are names


def _config_fields() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(SessionConfig)}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -MAX_INT <= v <= MAX_INT


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a setting can take (non-finite)")


def check_config(cfg, where: str) -> None:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected an object of settings")
    fields = _config_fields()
    for k, v in cfg.items():
        if k not in fields:
            raise ValueError(f"{where}: unknown setting {k!r} (expected one of {', '.join(fields)})")
        kind = str(fields[k])
        if k in ("model", "fold_compressor"):
            ok = isinstance(v, str) and v != ""
        elif k == "fold_compressor_digest":
            ok = v is None or (isinstance(v, str) and v != "")
        elif k == "stop_ids":
            ok = v is None or (isinstance(v, list) and len(v) <= 1024 and all(_is_int(x) and x >= 0 for x in v))
        elif k in CHOICES:
            ok = v in CHOICES[k]
        elif "float" in kind:
            ok = is_finite_number(v)
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
    if k in ("text", "regex") and isinstance(v, str):
        check_text(f"{op}: field {k!r}", v)
    if k == "regex":
        if not (isinstance(v, str) and v):
            raise ValueError(f"{op}: field 'regex' must be a non-empty string")
        try:
            compile_regex(v)
        except TargetError as e:
            raise ValueError(f"{op}: bad {e}") from None
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


def _check_ranges(where: str, v) -> None:
    if not (isinstance(v, list) and all(isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r)
                                        and 0 <= r[0] < r[1] for r in v)):
        raise ValueError(f"{where} must be a list of [start, end] ranges")


def check_step(op: str, a: dict) -> None:
    """Raises ValueError(reason) for a line whose fields are wrong."""
    if op == "config":
        check_config(a, "config")
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
        check_config(a.get("config", {}), "resume: field 'config'")
    elif op in ("prompt", "say"):
        allowed.add("text")
        if not (isinstance(a.get("text"), str) and (a["text"].strip() if op == "say" else a["text"])):
            raise ValueError(f"{op}: field 'text' must be a non-empty string")
        check_text(f"{op}: field 'text'", a["text"])
        if op == "say":  # a turn of the conversation, through the model's chat template
            allowed.add("role")
            if a.get("role", "user") not in ROLES:
                raise ValueError(f"say: field 'role' must be one of {', '.join(map(json.dumps, ROLES))}")
        if "pins" in a:  # pinned before the text was processed (Session.prompt's and say's pin=)
            allowed.add("pins")
            _check_ranges(f"{op}: field 'pins'", a["pins"])
        if "picker_pins" in a:  # which of those the picker chose (auto-pin), not the person
            allowed.add("picker_pins")
            _check_ranges("prompt: field 'picker_pins'", a["picker_pins"])
    elif op == "generate":  # a script's generate stops at end-of-text unless "stop_at_eos": false
        allowed |= {"n", "stop_at_eos"}
        if not isinstance(a.get("stop_at_eos", True), bool):
            raise ValueError("generate: field 'stop_at_eos' must be true or false")
        if not (_is_int(a.get("n")) and 0 <= a["n"] <= MAX_GENERATE):
            raise ValueError(f"generate: field 'n' must be an integer from 0 to {MAX_GENERATE:,}")
    elif op == "stop":
        if "at" not in a:
            raise ValueError("stop: field 'at' is missing")
    elif op == "rewind":
        allowed.add("index")
        if not (_is_int(a.get("index")) and a["index"] >= 0):
            raise ValueError("rewind: field 'index' must be a non-negative integer")
    elif op == "set":  # mid-session settings (Session.set)
        allowed |= {"window", "budget", "temperature", "top_p", "top_k", "min_p", "repetition_penalty"}
        for k in ("window", "budget"):
            if k in a and not (_is_int(a[k]) and a[k] >= 1):
                raise ValueError(f"set: field {k!r} must be a positive integer")
        if "top_k" in a and not (_is_int(a["top_k"]) and a["top_k"] >= 0):
            raise ValueError("set: field 'top_k' must be a non-negative integer")
        for k in ("temperature", "top_p", "min_p", "repetition_penalty"):
            if k in a and not is_finite_number(a[k]):
                raise ValueError(f"set: field {k!r} must be a finite number")
    elif op in NOTE_OPS:  # {"op": "accept", "range": [a, b], "score": 0.93}
        allowed |= {"range", "score"}
        if "range" not in a:
            raise ValueError(f"{op}: field 'range' is missing")
        _check_target(op, {"range": a["range"]})
        if "score" in a and not is_finite_number(a["score"]):
            raise ValueError(f"{op}: field 'score' must be a finite number")
    elif op in TARGET_OPS:
        allowed |= _check_target(op, a)
        if op in ("pin", "unpin") and "by" in a:
            allowed.add("by")
            if a["by"] not in BY:
                raise ValueError(f"{op}: field 'by' must be one of {', '.join(map(json.dumps, BY))}")
        if op == "fold" and "gist" in a:  # the gist in force (the log always has it; without, the model writes one)
            allowed.add("gist")
            if not (isinstance(a["gist"], str) and a["gist"].strip()):
                raise ValueError("fold: field 'gist' must be a non-empty string")
            check_text("fold: field 'gist'", a["gist"])
        if op == "recall" and "append" in a:  # re-encoded as a copy at the end, not in place
            allowed.add("append")
            if not isinstance(a["append"], bool):
                raise ValueError("recall: field 'append' must be true or false")
    extra = sorted(set(a) - allowed)
    if extra:
        raise ValueError(f"{op}: unknown field {extra[0]!r}")


def parse_script(path) -> list[Step]:
    """Reads and validates a whole script; raises HeedfulError('FILE:LINE: reason')."""
    from heedful.store.db import check_regular

    check_regular(path)  # a FIFO would be waited on forever
    path = Path(path)
    if path.is_dir():
        raise HeedfulError(f"{path}: is a directory, not a script")
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

        if len(raw) > MAX_SCRIPT_LINE_BYTES:
            raise bad(f"line of {len(raw):,} bytes is over the limit of {MAX_SCRIPT_LINE_BYTES:,}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise bad(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            if last:  # the file does not end with a newline and the line does not parse
                raise bad("truncated last line (incomplete JSON, no newline at the end)") from None
            raise bad(f"not JSON ({e.msg} at column {e.colno})") from None
        except ValueError as e:  # NaN, Infinity, an integer of thousands of digits
            if "digits" in str(e):
                raise bad("an integer of more than 4,300 digits (integers are at most 2^63 - 1)") from None
            raise bad(str(e)) from None
        except RecursionError:
            raise bad("JSON nested too deeply (a line is one flat object)") from None
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
