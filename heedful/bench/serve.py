"""`heedful bench serve`: `heedful serve` measured over HTTP on loopback, in one run.

1. A growing history: one conversation of TURNS requests, each sending the whole history
   (as OpenAI clients do); per request, the tokens encoded (prefill) against the history's.
   A model without a chat template talks through /v1/completions with its session named.
2. Many clients: CLIENTS at once, REQUESTS each (a growing history of their own), streamed;
   per client the time to first token and tokens/s of its replies (decode, after the first
   token), and the server's tokens/s over all of them.

The server runs in this process (uvicorn on a thread, a temporary store); the clients are
threads speaking HTTP through httpx, reading the server-sent events as they come.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

from heedful.app.options import model_options


class _Client:
    def __init__(self, url: str, chat: bool):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=600)
        self.chat = chat

    def ask(self, history: list, prompt: str, max_tokens: int, sid: int | None) -> dict:
        """One streamed request; returns text, ttft, decode seconds, tokens and the heedful object."""
        if self.chat:
            path, body = "/chat/completions", {"messages": history + [{"role": "user", "content": prompt}]}
        else:
            path, body = "/completions", {"prompt": prompt, **({"heedful": {"session": sid}} if sid else {})}
        body.update(max_tokens=max_tokens, stream=True, temperature=0, stream_options={"include_usage": True})
        t0 = time.perf_counter()
        first = last = None
        text, extra, usage = [], None, None
        with self.http.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                r.read()
                raise click.ClickException(f"{path}: HTTP {r.status_code}: {r.text[:200]}")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    raise click.ClickException(f"{path}: {obj['error']['message']}")
                usage = obj.get("usage") or usage
                extra = obj.get("heedful", extra)
                for ch in obj.get("choices", []):
                    piece = ch.get("delta", {}).get("content") if self.chat else ch.get("text")
                    if piece:
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        text.append(piece)
        n = (usage or {}).get("completion_tokens", 0)
        return {"text": "".join(text), "ttft": (first or time.perf_counter()) - t0,
                "decode_s": (last - first) if first and last else 0.0, "tokens": n, "heedful": extra}


def _serve(lm, db: Path, settings: dict, max_kv_bytes: int):
    import uvicorn

    from heedful.serve.app import Config, make_app
    from heedful.serve.pool import Pool
    from heedful.store import Store

    store = Store.open(db)
    pool = Pool(lm, store, settings, max_kv_bytes=max_kv_bytes)
    app = make_app(pool, Config(model_id="bench", max_tokens=4096))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise click.ClickException("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, store, f"http://127.0.0.1:{port}/v1"


def _same_as_generate(url: str, lm, settings: dict, chat: bool, max_tokens: int) -> dict:
    """One greedy request streamed, against the engine driven directly as `heedful generate
    --chat` (or a plain prompt) drives it, in a session of the same settings."""
    from heedful.app.open import session_for

    question = "What are three things to pack for a day at the beach?"
    served = _Client(url, chat).ask([], question, max_tokens, None)["text"]
    s = session_for(lm, **settings)
    (s.say if chat else s.prompt)(question)
    hidden = set(s.config.stop_ids) & set(getattr(lm.tokenizer, "all_special_ids", ()) or ())
    direct = "".join(t.text for t in s.generate(max_tokens, stop_at_eos=True) if t.id not in hidden)
    return {"equal": served == direct, "tokens": len(lm.tokenizer(direct, add_special_tokens=False)["input_ids"]),
            "served": served[:80]}


def _growing(url: str, chat: bool, turns: int, max_tokens: int) -> list[dict]:
    c = _Client(url, chat)
    history, sid, rows = [], None, []
    for i in range(turns):
        prompt = f"Turn {i + 1}. Tell me one short fact about the number {i + 3}."
        r = c.ask(history, prompt if chat else f"\nQ{i + 1}: {prompt}\nA:", max_tokens, sid)
        h = r["heedful"]
        sid = h["session"]
        rows.append({"turn": i + 1, "prefill": h["prefill_tokens"], "history": h["tokens"] - r["tokens"]
                     - h["prefill_tokens"], "ttft": r["ttft"], "continued": h["continued"],
                     "tokens": r["tokens"], "decode_s": r["decode_s"]})
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["text"]}]
    return rows


def _many(url: str, chat: bool, clients: int, requests: int, max_tokens: int) -> tuple[list, float, int]:
    results: list = [None] * clients
    errors: list = []

    def one(k: int) -> None:
        try:
            c = _Client(url, chat)
            history, sid, rs = [], None, []
            for i in range(requests):
                prompt = f"Client {k + 1}, question {i + 1}: name a colour and a fruit."
                r = c.ask(history, prompt if chat else f"\n{prompt}\n", max_tokens, sid)
                sid = r["heedful"]["session"]
                history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["text"]}]
                rs.append(r)
            results[k] = rs
        except Exception as e:  # reported after the others finish
            errors.append(f"client {k + 1}: {e}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise click.ClickException("; ".join(errors[:3]))
    return results, wall, sum(r["tokens"] for rs in results for r in rs)


@click.command()
@click.option("--turns", type=click.IntRange(1, 1000), default=30, show_default=True,
              help="Requests of the growing conversation.")
@click.option("--clients", type=click.IntRange(1, 256), default=8, show_default=True, help="Clients at once.")
@click.option("--requests", type=click.IntRange(1, 1000), default=4, show_default=True, help="Requests per client.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="max_tokens of every request.")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Sessions' window [default: the engine's].")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Sessions' KV budget [default: the engine's].")
@click.option("--max-kv-bytes", default="1GiB", show_default=True, help="The server's KV memory bound.")
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object.")
@model_options
def serve(turns, clients, requests, max_tokens, window, budget, max_kv_bytes, as_json, model, dtype, device,
          trust_remote_code):
    """heedful serve over loopback: prefill per request of a growing history; TTFT and tokens/s of N clients."""
    from heedful.serve.pool import parse_size
    from heedful.models.loading import load_model

    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    chat = bool(getattr(lm.tokenizer, "chat_template", None))
    settings = {k: v for k, v in (("window", window), ("budget", budget)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        server, thread, store, url = _serve(lm, Path(tmp) / "bench.db", settings, parse_size(max_kv_bytes))
        try:
            same = _same_as_generate(url, lm, {**settings, "temperature": 0.0}, chat, 48)
            grow = _growing(url, chat, turns, max_tokens)
            many, wall, total = _many(url, chat, clients, requests, max_tokens)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            store.close()
    ttft = [r["ttft"] for rs in many for r in rs]
    per_client = [sum(r["tokens"] - 1 for r in rs) / max(1e-9, sum(r["decode_s"] for r in rs)) for rs in many]
    figures = {
        "model": lm.name, "api": "chat" if chat else "completions", "max_tokens": max_tokens,
        "same_as_generate": same,
        "growing": {"turns": turns, "prefill_first": grow[0]["prefill"],
                    "prefill_mean_after_first": statistics.mean(r["prefill"] for r in grow[1:]) if turns > 1 else None,
                    "prefill_max_after_first": max((r["prefill"] for r in grow[1:]), default=None),
                    "history_last": grow[-1]["history"], "all_continued": all(r["continued"] for r in grow[1:]),
                    "ttft_first_s": grow[0]["ttft"], "ttft_last_s": grow[-1]["ttft"],
                    "tokens_per_s": sum(r["tokens"] - 1 for r in grow) / max(1e-9, sum(r["decode_s"] for r in grow))},
        "clients": {"clients": clients, "requests": requests, "wall_s": wall, "tokens": total,
                    "server_tokens_per_s": total / wall, "ttft_median_s": statistics.median(ttft),
                    "ttft_max_s": max(ttft), "client_tokens_per_s_median": statistics.median(per_client),
                    "client_tokens_per_s_min": min(per_client)},
    }
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
    g, c = figures["growing"], figures["clients"]
    click.echo(f"heedful serve, {lm.name} ({figures['api']}), max_tokens {max_tokens}")
    click.echo(f"greedy, 48 tokens at most: the streamed answer equals the engine's (heedful generate"
               f"{' --chat' if chat else ''}): {same['equal']} ({same['tokens']} tokens: {same['served'][:50]!r}...)")
    click.echo(f"growing history, {turns} requests: prefill tokens per request: first {g['prefill_first']}, then "
               f"mean {g['prefill_mean_after_first'] or 0:.1f} (max {g['prefill_max_after_first']}); history before "
               f"the last request {g['history_last']} tokens; every request continued the session: "
               f"{g['all_continued']}; TTFT first {g['ttft_first_s'] * 1e3:.0f} ms, "
               f"last {g['ttft_last_s'] * 1e3:.0f} ms; decode {g['tokens_per_s']:.1f} tok/s (one client)")
    click.echo(f"{clients} clients x {requests} requests (streamed): {total} tokens in {wall:.1f} s = "
               f"{c['server_tokens_per_s']:.1f} tok/s at the server; per client: TTFT median "
               f"{c['ttft_median_s'] * 1e3:.0f} ms (max {c['ttft_max_s'] * 1e3:.0f} ms), decode "
               f"{c['client_tokens_per_s_median']:.1f} tok/s median (min {c['client_tokens_per_s_min']:.1f})")
