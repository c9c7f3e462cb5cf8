"""`heedful bench store`: recording speed, open + resume and export times, bytes per token.

Drives the store's recorder the way a generating session does (one token per call, the
token leaving a window of W evicted at each step), with no model, so the figures are the
store's own cost.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click

WORDS = ("the vault code is remember it alice met bob at station noon quick brown fox jumps over lazy dog "
         "gated attention multiplies output by sigmoid gate so there no sink capital of france paris").split()


def _records(n: int, start: int = 0):
    from heedful.selector.recorder import TokenRecord

    return [TokenRecord(i, 7 + (i * 31) % 50000, " " + WORDS[i % len(WORDS)], "generated")
            for i in range(start, start + n)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


@click.command()
@click.option("--tokens", "n", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Tokens in the benchmark session.")
@click.option("--window", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Database file [default: a temp file].")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def store(n, window, db, as_json):
    """Store speed: tokens recorded per second, open + resume and export of an N-token session."""
    from heedful.store import Store
    from heedful.store.export import export

    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="heedful-bench-")
        db = os.path.join(tmp.name, "bench.db")
    path = Path(db)
    figures: dict = {"machine": machine(), "tokens": n, "window": window}
    step = 10_000

    # 1. streaming: one token per call, one eviction per step, as a generating session
    with Store.open(path) as st:
        rec = st.new_session(title="bench store")
        rec.event("config", {"model": "bench", "window": window, "budget": window + 64, "sinks": 0})
        rec.event("prompt", {"text": "bench"})
        rec.event("generate", {"n": n})
        recs = _records(n)
        elapsed = 0.0
        with click.progressbar(length=n, label="recording", file=click.get_text_stream("stderr")) as bar:
            for a in range(0, n, step):
                t0 = time.perf_counter()
                for r in recs[a:a + step]:
                    if r.index >= window:
                        rec.evicted([(r.index - window, r.index - window + 1)], "window")
                    rec.tokens([r])
                rec.flush()
                elapsed += time.perf_counter() - t0
                bar.update(min(step, n - a))
        rec.close()
        sid = rec.session_id
        figures["record_tokens_per_s"] = round(n / elapsed)

        # 2. batched: tokens reported 512 at a time (a prompt, a replay, an import)
        rec2 = st.new_session(title="bench store batched")
        rec2.event("config", {"model": "bench", "window": window})
        m = min(n, 200_000)
        t0 = time.perf_counter()
        for a in range(0, m, 512):
            rec2.tokens(recs[a:a + 512][: m - a])
        rec2.close()
        figures["record_batched_tokens_per_s"] = round(m / (time.perf_counter() - t0))
        st.conn.execute("DELETE FROM sessions WHERE id = ?", (rec2.session_id,))
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        st.conn.execute("VACUUM")
    figures["db_bytes_per_token"] = round(path.stat().st_size / n, 1)

    # 3. open + resume: everything Session.restore needs, from a cold open
    t0 = time.perf_counter()
    with Store.open(path, create=False) as st:
        data = st.load(sid)
        st.reopen(sid).close()
        figures["open_resume_s"] = round(time.perf_counter() - t0, 3)
        assert len(data.token_ids) == n

        # 4. exports
        for what, fmt in (("all", "txt"), ("all", "jsonl"), ("retained", "md")):
            sink = io.StringIO()
            t0 = time.perf_counter()
            export(st, sid, what, fmt, sink)
            figures[f"export_{what}_{fmt}_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        hits = st.search("capital of france", sid, limit=5)
        figures["search_s"] = round(time.perf_counter() - t0, 4)
        assert hits
        # text found nowhere: the index finds nothing, then every chunk is scanned (the worst case)
        t0 = time.perf_counter()
        hits = st.search("qzxjv", sid, limit=5)
        figures["search_scan_s"] = round(time.perf_counter() - t0, 4)
        assert not hits
    if tmp is not None:
        tmp.cleanup()

    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo(f"machine: {figures['machine']}")
    click.echo(f"session of {n:,} tokens, window {window}")
    click.echo(f"record, one token per call:   {figures['record_tokens_per_s']:>12,} tokens/s  (goal >= 200,000)")
    click.echo(f"record, 512 tokens per call:  {figures['record_batched_tokens_per_s']:>12,} tokens/s")
    click.echo(f"open + resume (load stream):  {figures['open_resume_s']:>12.3f} s  (goal < 1 s)")
    for k, v in figures.items():
        if k.startswith("export_"):
            click.echo(f"{k.replace('_', ' ')[:-2] + ':':29} {v:>12.3f} s  (goal < 2 s)")
    click.echo(f"search (FTS):                 {figures['search_s']:>12.4f} s")
    click.echo(f"search, no match (full scan): {figures['search_scan_s']:>12.4f} s")
    click.echo(f"database bytes per token:     {figures['db_bytes_per_token']:>12.1f}")
