"""`heedful bench tui`: can the app keep up with a fast stream, and does it stay responsive?

Drives the real HeedfulApp through Textual's Pilot (headless) over a synthetic session that
streams tokens at a fixed rate (no model: the question is the UI's cost, not the model's).
Measures, in one run:
- keep-up: tokens streamed per second against tokens the view has wrapped and shown, and the
  lag between the stream's end and the view catching up;
- key press to repaint under full-speed streaming: from the key event's creation (Textual
  stamps each event with the monotonic clock) to the end of the screen refresh that follows
  the cursor move (`call_after_refresh`), p50 and p95. Pilot's own press/pause cycle costs
  ~60 ms even on an empty app, so it is used only to send keys, not to time them;
- the same key latency with --big tokens (default 100,000) already in the session;
- start-up, each in a fresh process (median of --starts runs): `heedful --help`, and
  `heedful chat`'s first paint (the app headless, from the process's start to the end of the
  first screen refresh) and the moment its model is loaded and the session open (the
  embedded model unless --model).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from heedful.selector.config import SessionConfig, Stats
from heedful.selector.rows import RowKind

WORDS = ("the vault code is 4821 remember it alice met bob at the station at noon and then "
         "a filler sentence follows another filler sentence while the model keeps writing").split()


class SyntheticSession:
    """A stand-in for Session (the SessionView the app reads: heedful.selector.view),
    streaming words at `rate` tokens/s, with no model."""

    def __init__(self, rate: float, preload: int = 0):
        self.rate = rate
        self.config = SessionConfig(model="synthetic stream", window=256, budget=1024, sinks=0)
        self.gated = True
        self.template = None
        self.gate_mean = None
        self.token_texts = [" " + WORDS[i % len(WORDS)] for i in range(preload)]
        self.token_ids = list(range(preload))
        self.token_sources = ["generated"] * preload
        self.next_logits = object()
        self.last_attention = None
        self.collect_attention = False
        self.recorder = None
        self._pins: list = []
        self.generated = 0
        self.started = self.finished = 0.0

    def __len__(self):
        return len(self.token_texts)

    def generate(self, n, *, stop_at_eos=False):
        self.started = time.perf_counter()
        for i in range(n):
            due = self.started + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.token_texts.append(" " + WORDS[len(self.token_texts) % len(WORDS)])
            self.token_ids.append(len(self.token_ids))
            self.token_sources.append("generated")
            self.generated += 1
            yield None
        self.finished = time.perf_counter()

    def retained(self):
        n = len(self.token_texts)
        return list(range(max(0, n - self.config.window), n))

    def rows(self):
        return [(t, RowKind.TOKEN) for t in self.retained()]

    def folds(self):
        return []

    def watch_gates(self):
        pass

    def pins(self):
        return list(self._pins)

    def dropped(self):
        return []

    def pin(self, span):
        self._pins.append(tuple(span))

    def unpin(self, span):
        self._pins = [p for p in self._pins if p != tuple(span)]

    def text(self, a=0, b=None):
        return "".join(self.token_texts[a:b])

    def stats(self):
        n = len(self.token_texts)
        return Stats(tokens=n, generated=self.generated, resident=min(n, 256), peak_resident=min(n, 256),
                     evicted=max(0, n - 256), tokens_per_s=self.rate, window=256, budget=1024,
                     pinned=0, resident_bytes=0, allocated_bytes=0)


def _timed_app(session, **kw):
    """HeedfulApp that times key -> repaint and records when the view shows each length."""
    from textual import events
    from textual._time import get_time

    from heedful.tui.app import HeedfulApp

    class TimedApp(HeedfulApp):
        latencies: list[float] = []
        shown_at: list[tuple[float, int]] = []
        _key_time: float | None = None

        async def on_event(self, event):
            if isinstance(event, events.Key):
                self._key_time = event.time
            await super().on_event(event)

        def on_mount(self):
            super().on_mount()
            view = self.view
            move = view.move

            def timed_move(t, extend=False):  # the view's cursor keys (tui/token_view.py) end here
                move(t, extend)
                t0 = self._key_time
                if t0 is not None:
                    self.call_after_refresh(lambda: self.latencies.append(1000 * (get_time() - t0)))

            view.move = timed_move

        def refresh_stream(self):
            super().refresh_stream()
            self.shown_at.append((time.perf_counter(), self.view._wrapped))

    return TimedApp(session, **kw)


async def _press(pilot, presses: int) -> None:
    for i in range(presses):
        await pilot.press("left" if i % 2 else "right")
        await pilot.pause()


async def _stream_run(rate: float, n: int, presses: int, model: str | None = None):
    if model is None:
        s = SyntheticSession(rate)
        s.token_texts.extend([" start"])
    else:  # a real model streaming as fast as it can
        from heedful.app.open import open_session

        s = open_session(None if model == "default" else model, window=64, budget=128)
        s.prompt("The vault code is 4821. Remember it.")
        s.started = s.finished = 0.0
    app = _timed_app(s, chunk=n, show_speed=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.view.focus()
        app.action_generate()
        await pilot.pause(0.2)
        await _press(pilot, presses)
        while app.generating:
            await pilot.pause(0.02)
        await pilot.pause()
        shown = app.view._wrapped
    total = len(s.token_texts)
    done = next((t for t, shown in app.shown_at if shown >= total), float("nan"))
    if model is not None:  # the real session has no stream clock of its own
        st = s.stats()
        return {"streamed": st.generated, "stream_s": st.generated / st.tokens_per_s, "shown": shown - 1,
                "lag_ms": float("nan"), "lat": list(app.latencies), "refreshes": len(app.shown_at)}
    return {"streamed": s.generated, "stream_s": s.finished - s.started, "shown": shown - 1,
            "lag_ms": 1000 * (done - s.finished), "lat": list(app.latencies), "refreshes": len(app.shown_at)}


async def _big_run(big: int, presses: int):
    s = SyntheticSession(1e9, preload=big)
    app = _timed_app(s, show_speed=False)
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t0
        app.view.focus()
        app.view.action_end()
        app.latencies.clear()
        await _press(pilot, presses)
    return {"first_paint_s": first, "lat": list(app.latencies)}


# `heedful chat` in a child process, headless: prints PAINT after the first refresh, OPEN
# once the session is open, then quits
CHAT_PROBE = """
import sys
import heedful.tui.app as m

cls, run, mount, opened = m.HeedfulApp, m.HeedfulApp.run, m.HeedfulApp.on_mount, m.HeedfulApp._opened

def on_mount(self):
    mount(self)
    self.call_after_refresh(lambda: print("PAINT", flush=True))

def _opened(self):
    opened(self)
    print("OPEN", flush=True)
    self.exit()

cls.on_mount, cls._opened = on_mount, _opened
cls.run = lambda self: run(self, headless=True, size=(120, 40))
from heedful.cli import main
main(sys.argv[1:])
"""


def _heedful_help_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "heedful", "--help"], check=True, capture_output=True)
    return time.perf_counter() - t0


def _chat_start(model: str | None) -> tuple[float, float]:
    """(first paint, session open) in seconds from the start of a `heedful chat` process."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["chat", "--db", str(Path(tmp) / "bench.db"), *(["--model", model] if model else [])]
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", CHAT_PROBE, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        seen = {}
        for line in p.stdout:
            if line.strip() in ("PAINT", "OPEN"):
                seen.setdefault(line.strip(), time.perf_counter() - t0)
        err = p.stderr.read()
        if p.wait() != 0 or len(seen) != 2:
            raise click.ClickException(f"heedful chat did not start: {err.strip()[-400:]}")
    return seen["PAINT"], seen["OPEN"]


def startup(model: str | None = None, starts: int = 3) -> dict:
    """Median seconds of `heedful --help`, chat's first paint and chat's open session."""
    helps = [_heedful_help_s() for _ in range(starts)]
    chats = [_chat_start(model) for _ in range(starts)]
    return {"help_s": statistics.median(helps), "paint_s": statistics.median(p for p, _ in chats),
            "open_s": statistics.median(o for _, o in chats)}


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@click.command()
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Streamed tokens per second.")
@click.option("-n", "--tokens", "n", type=int, default=5000, show_default=True, help="Tokens to stream.")
@click.option("--presses", type=int, default=60, show_default=True, help="Key presses timed per run.")
@click.option("--big", type=int, default=100_000, show_default=True, help="Tokens already in the big session.")
@click.option("--model", default=None, metavar="DIR|default",
              help="Stream from a real model (as fast as it goes) instead of the synthetic stream.")
@click.option("--starts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fresh processes per start-up figure (the median is shown).")
@click.option("--startup-only", is_flag=True, help="Only the start-up figures (heedful --help, chat's first paint).")
def tui(rate, n, presses, big, model, starts, startup_only):
    """UI keep-up with a fast stream, key-to-repaint latency (Pilot, headless), start-up."""
    st = startup(None if model in (None, "default") else model, starts)
    click.echo(f"start-up (median of {starts}): heedful --help {st['help_s']:.2f} s (goal 0.5 s); heedful chat "
               f"first paint {st['paint_s']:.2f} s (goal 2 s), model loaded and session open {st['open_s']:.2f} s")
    if startup_only:
        return
    r = asyncio.run(_stream_run(rate, n, presses, model))
    b = asyncio.run(_big_run(big, presses))
    click.echo(f"stream: {r['streamed']} tokens at {r['streamed'] / r['stream_s']:.0f} tok/s; view shows "
               f"{r['shown']} after {r['refreshes']} batched refreshes; last token on screen {r['lag_ms']:.0f} ms "
               f"after it was generated")
    click.echo(f"key press -> repaint while streaming: p50 {_pct(r['lat'], 0.5):.1f} ms, "
               f"p95 {_pct(r['lat'], 0.95):.1f} ms (goal p95 < 50 ms)")
    click.echo(f"session of {big:,} tokens: first paint {b['first_paint_s']:.2f} s; key press -> repaint "
               f"p50 {_pct(b['lat'], 0.5):.1f} ms, p95 {_pct(b['lat'], 0.95):.1f} ms")
