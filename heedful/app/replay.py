"""Running a replay script into a fresh session, recorded atomically.

The run records into an atomic recorder that touches the database only once the whole
script has succeeded, so a replay lands whole or not at all; a script that fails while it
runs (a pin whose text never appears) is reported as FILE:LINE: reason, like a bad line.
Operations that carry "at" are applied between the same two tokens of their generate as
when they were made; a `resume` rebuilds the engine with Session.restore from the first
"tokens" tokens, as the original resume did, so the token ids after it match too.

`autopin` (optional, duck-typed so that this room imports nothing above it: heedful.learn's
AutoPinner) pins what a learned picker scores high while the script runs: its
`prompt(session, text, pins)` processes a prompt line, `token(session, tok)` sees each
generated token, `flush(session)` ends the script. What it pins is logged as pins marked
`"by": "picker"` (a prompt's: `"picker_pins"`).

A line's marks of who made it (`"by"` on pin and unpin, `"picker_pins"` on a prompt) are
logged again by the replay (store/tagging.py), so a recording made with auto-pin replays into
one that still tells the picker's pins from the person's; `accept` and `reject` (a picker's
suggestion, accepted or rejected in the app) change nothing in the engine and are logged as
they stand.
"""

from __future__ import annotations

from dataclasses import dataclass

from heedful.app.open import clip_spans, resolve_fold_settings, restore_session, stamp
from heedful.app.script import NOTE_OPS, TARGET_OPS, Step
from heedful.errors import HeedfulError
from heedful.models.loading import load_model
from heedful.selector.session import Session, SessionConfig
from heedful.store import SessionRecorder
from heedful.store.tagging import tagging


@dataclass
class ReplayResult:
    session: object  # the Session after the last step
    recorder: object  # the atomic SessionRecorder holding the recording
    results: list[dict]


class _Runner:
    def __init__(self, path, lm, recorder, on_result, autopin=None):
        self.path, self.lm, self.rec, self.on_result = path, lm, recorder, on_result
        self.autopin = autopin
        self.session = None
        self.results: list[dict] = []

    def emit(self, step: Step, **result) -> None:
        r = {"line": step.line, "op": step.op, **result}
        self.results.append(r)
        if self.on_result:
            self.on_result(r)

    def config(self, step: Step) -> None:
        cfg = {**step.args, "model": self.lm.name}
        if "fold_compressor" in cfg:  # "auto", a folder relative to here, or one recorded elsewhere
            cfg = resolve_fold_settings(self.lm, cfg)
        stamp(self.rec, self.lm)  # the session carries its model's and tokenizer's fingerprints
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
            pins = [tuple(p) for p in a.get("pins", ())]
            with tagging(s).tagged(**({"picker_pins": a["picker_pins"]} if "picker_pins" in a else {})):
                r = self.autopin.prompt(s, a["text"], pins) if self.autopin else s.prompt(a["text"], pin=pins)
            self.emit(step, range=[r.start, r.stop])
        elif op == "say":
            r = s.say(a["text"], a.get("role", "user"), pin=[tuple(p) for p in a.get("pins", ())])
            self.emit(step, range=[r.start, r.stop])
        elif op in TARGET_OPS:
            target = {k: v for k, v in a.items() if k not in ("at", "append", "gist", "by")}
            extra = {k: a[k] for k in ("append", "gist") if k in a}
            with tagging(s).tagged(**({"by": a["by"]} if "by" in a else {})):
                ranges = getattr(s, op)(target, **extra)
            self.emit(step, ranges=[list(r) for r in ranges])
        elif op in NOTE_OPS:
            self.rec.event(op, dict(a))
            self.emit(step, range=a["range"])
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
        s, n = self.session, step.args["tokens"]
        if n > len(s):
            raise HeedfulError(f"resume at {n} tokens: the stream has only {len(s)}")
        cfg = {**s.config.to_dict(), **step.args.get("config", {}), "model": self.lm.name}
        self.rec.event("resume", {"tokens": n, "config": cfg})
        self.session = restore_session(s.model, s.tokenizer, s.gated, cfg, s.token_ids[:n],
                                       s.token_texts[:n], s.token_sources[:n], clip_spans(s.pins(), n),
                                       clip_spans(s.dropped(), n), self.rec,
                                       folds=[f for f in s.folds() if f[1] <= n])
        self.emit(step, tokens=n)

    def generate(self, step: Step, during: list[Step]) -> None:
        s = self.session
        start = len(s)
        gen = s.generate(step.args["n"], stop_at_eos=step.args.get("stop_at_eos", True))
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
                        tok = next(gen)
                    except StopIteration:
                        break
                    ids.append(tok.id)
                    if self.autopin:
                        self.autopin.token(s, tok)
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
                    if e.exit_code != HeedfulError.exit_code:  # a fault (full output, disk): not the line's
                        return False
                    raise HeedfulError(f"{path}:{step.line}: {_script_words(str(e))}") from None
                return False

        return _Ctx()


def _script_words(message: str) -> str:
    """An engine message in a script's words: its settings, not the command line's flags
    ("--fold-budget 40" is "fold_budget 40" on a script line; --model, --tp stay flags)."""
    import re

    from heedful.app.script import _config_fields

    names = {k.replace("_", "-") for k in _config_fields()} - {"model"}

    def word(m):
        return m.group(1).replace("-", "_") if m.group(1) in names else m.group(0)

    return re.sub(r"(?<![\w-])--([a-z][a-z-]*)", word, message)


def model_for(steps: list[Step], path, *, model: str | None = None, dtype="auto", device=None,
              trust_remote_code=False, cache: dict | None = None, adapter=None, **placement):
    """The model a script runs on (`model`, else its config line's, else the embedded one),
    loaded once per name when `cache` is given (several scripts, one load). A load that fails
    is reported at the config line: 'FILE:LINE: reason'. `placement`: load_model's tp,
    device_map, max_memory, offload_folder."""
    first = steps[0]
    name = model or (first.args.get("model") if first.op == "config" else None)
    key = name or "default"
    if cache is not None and key in cache:
        return cache[key]
    with _Runner(path, None, None, None).at_line(first):
        extra = {"adapter": adapter} if adapter else {}
        lm = load_model(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code, **extra, **placement)
    if cache is not None:
        cache[key] = lm
    return lm


def run_script(steps: list[Step], path, *, model: str | None = None, dtype="auto", device=None,
               trust_remote_code=False, on_result=None, lm=None, autopin=None) -> ReplayResult:
    """Runs validated steps into a fresh session recorded atomically (nothing is written
    here: call result.recorder.commit(store) to keep it). Errors: 'FILE:LINE: reason'."""
    first = steps[0]
    cfg = dict(first.args) if first.op == "config" else {}
    if lm is None:
        lm = model_for(steps, path, model=model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    rec = SessionRecorder(atomic=True)
    runner = _Runner(path, lm, rec, on_result, autopin)
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
    if autopin:  # the end of the stream decides the words still waiting for their lookahead
        autopin.flush(runner.session)
    return ReplayResult(runner.session, rec, runner.results)
