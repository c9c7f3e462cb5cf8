"""`heedful serve`: an OpenAI-compatible HTTP server over heedful sessions (docs/serve.md)."""

from __future__ import annotations

import errno
import os
import socket

import click

from heedful.app.options import model_options, session_options
from heedful.errors import HeedfulError
from heedful.limits import MAX_GENERATE

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default; another one warns without --api-key).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: any free).")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite store of the sessions (default: $HEEDFUL_DB or ~/.local/share/heedful/heedful.db).")
@click.option("--api-key", default=None, envvar="HEEDFUL_API_KEY",
              help="Require Authorization: Bearer KEY on every request [default: $HEEDFUL_API_KEY, else none].")
@click.option("--model-id", default=None, help="The model's id in /v1/models [default: the --model name].")
@click.option("--max-kv-bytes", default="1GiB", show_default=True,
              help="KV memory of the live sessions; past it the least recently used idle one is released "
                   "(rebuilt from the store on its next request).")
@click.option("--max-tokens", "max_tokens_limit", type=click.IntRange(1, MAX_GENERATE), default=4096,
              show_default=True, help="The most tokens one request may ask for (max_tokens).")
@click.option("--default-max-tokens", type=click.IntRange(1, MAX_GENERATE), default=512, show_default=True,
              help="max_tokens when a request gives none.")
@click.option("--max-requests", type=click.IntRange(1, 10_000), default=64, show_default=True,
              help="Requests in flight at once; more are refused with 503.")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Allow browser requests from this origin (repeatable; off by default).")
@session_options
@model_options
def serve(host, port, db, api_key, model_id, max_kv_bytes, max_tokens_limit, default_max_tokens, max_requests,
          cors, model, dtype, device, trust_remote_code, **settings):
    """An OpenAI-compatible server: /v1/chat/completions, /v1/completions, /v1/models, with pins.

    Each conversation is a session in the store with a bounded KV cache; a client that
    sends the whole history each time continues its session. Extra fields:
    "heedful": {"pin": [...], "budget": 512, ...} (docs/serve.md)."""
    from heedful.serve.pool import parse_size

    if host not in LOOPBACK and not api_key:
        click.echo(f"heedful: warning: serving on {host} without --api-key: anyone who reaches it can use it",
                   err=True)
    limit = parse_size(max_kv_bytes)
    sock = bind(host, port)  # before the model loads: a port in use is one line at once
    try:
        _serve(sock, host, port, db, api_key, model_id, limit, max_tokens_limit, default_max_tokens, max_requests,
               cors, model, dtype, device, trust_remote_code, settings)
    finally:
        sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) as uvicorn binds one (IPv6 when the host has a
    colon; SO_REUSEADDR), handed to uvicorn; a port in use or a host that is not this
    machine's is a HeedfulError naming the flag."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise HeedfulError(f"--port {port}: address already in use") from None
        if e.errno == errno.EACCES:
            raise HeedfulError(f"--port {port}: permission denied (ports below 1024 need privileges)") from None
        raise HeedfulError(f"--host {host}: cannot bind it ({e.strerror or e})") from None
    return sock


def _serve(sock, host, port, db, api_key, model_id, limit, max_tokens_limit, default_max_tokens, max_requests, cors,
           model, dtype, device, trust_remote_code, settings):
    import uvicorn

    from heedful.models.loading import load_model
    from heedful.serve.app import Config, make_app
    from heedful.serve.pool import Pool
    from heedful.store import Store

    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    store = Store.open(db)
    pool = Pool(lm, store, settings, max_kv_bytes=limit)
    config = Config(model_id=model_id or _model_id(model, lm), api_key=api_key, max_tokens=max_tokens_limit,
                    default_max_tokens=min(default_max_tokens, max_tokens_limit), max_requests=max_requests,
                    cors=list(cors))
    app = make_app(pool, config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    _announce(server, config, store)
    server.run(sockets=[sock])
    store.close()


def base_url(host: str, port: int) -> str:
    """The /v1 base URL of a listening address (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def _model_id(model, lm) -> str:
    name = str(model or lm.name)
    return os.path.basename(name.rstrip("/")) or name


def _announce(server, config, store) -> None:
    """Prints where the server listens once it does (with --port 0, the port it got)."""
    startup = server.startup

    async def started(sockets=None):
        await startup(sockets=sockets)
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                click.echo(f"heedful: serving {config.model_id} on {base_url(host, port)} (store {store.path})",
                           err=True)
                return

    server.startup = started
