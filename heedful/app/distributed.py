"""One process of a run: alone, or one rank of a tensor-parallel launch (`torchrun
--nproc-per-node N -m heedful generate|replay ... --tp auto`).

Every rank opens the same session over its shard of the model and runs the same
operations; the logits are gathered, so every rank samples the same tokens and its policy
keeps, pins and evicts the same rows (of its own heads). Rank 0 is the only voice: it
prints and records into the store. The other ranks write nothing: their stdout and stderr
go to /dev/null, their recorder is a NullRecorder, and they open a store only to read a
session they continue.

A parallel run records atomically: rank 0 buffers the recording and commits it in one
transaction once every rank has finished and reported the same stream, pins and drops
(`finish`). A run that fails anywhere leaves nothing in the store.

Failures (`guard`): a rank that fails publishes its exit code and reason in torchrun's
key-value store and closes its connections, so the others' next collective fails at once
instead of waiting. Rank 0 then prints one line, naming the failing rank when it is not
itself (`rank 1 of 2 failed: ...`), with that rank's exit code (2: bad input, 1: anything
else); a rank that vanished without a word (killed) is reported as lost. Bad input is
found identically on every rank, so it reads as it would in one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time

from heedful.errors import HeedfulError
from heedful.models.parallel import World, check_options, connect, is_lost_peer, require_torchrun

_KEY = "heedful/failed/"
_REPORTED = "heedful/reported"
_EXITED = "heedful/exited/"


class RankError(HeedfulError):
    """Another rank of a parallel run failed, vanished, or ended with a different session."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Ranks:
    """What a command needs to know about the other processes of its run (none by default)."""

    def __init__(self, world: World | None = None):
        self.world = world
        self._store = None  # torchrun's key-value store, kept to relay a failure after the group is gone
        self._stderr = None  # this rank's own stderr, kept for a last word when rank 0 is gone

    @property
    def parallel(self) -> bool:
        return self.world is not None and self.world.size > 1

    @property
    def main(self) -> bool:
        return self.world is None or self.world.main

    def _name(self) -> str:
        return f"rank {self.world.rank} of {self.world.size}"

    # ------------------------------------------------------------------ set-up
    def silence(self) -> None:
        """Rank 0 speaks for all: the others' stdout and stderr go to /dev/null (the file
        descriptors, so the libraries' own messages go too)."""
        if self.main:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self._stderr = os.fdopen(os.dup(2), "w")
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        import warnings

        warnings.simplefilter("ignore")

    def recorder(self, make):
        """`make()` on rank 0; a recorder that writes nothing elsewhere."""
        if self.main:
            return make()
        from heedful.selector.recorder import NullRecorder

        return NullRecorder()

    # ------------------------------------------------------------------ agreement
    def agree(self, what: str, value) -> None:
        """Every rank must hold the same `value` (JSON-able); raises RankError where one
        differs from rank 0's. Also a barrier: a rank that died makes it fail."""
        if not self.parallel:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        digests: list = [None] * self.world.size
        dist.all_gather_object(digests, digest)
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        if bad:
            raise RankError(f"rank {bad[0]} of {self.world.size} ended with a different {what} from rank 0's "
                            "(nothing was written to the store)")

    def agree_session(self, session) -> None:
        self.agree("session", session_digest(session))

    # ------------------------------------------------------------------ failures
    @contextlib.contextmanager
    def guard(self):
        """Turns a failure anywhere in a parallel run into one line on rank 0 and an exit on
        every rank (see the module's docstring). A single process is left as it is."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:
            if not self.parallel:
                raise
            self._fail(e)
        if self.world is not None:
            self._release()  # leaves the group now: no teardown left for the interpreter's exit

    def _store_get(self, key: str) -> str | None:
        try:
            if self._store is not None and self._store.check([key]):
                return self._store.get(key).decode()
        except Exception:  # the store went with rank 0 (no torchrun agent hosting it)
            pass
        return None

    def _store_set(self, key: str, value: str) -> None:
        try:
            if self._store is not None:
                self._store.set(key, value)
        except Exception:
            pass

    def _peer_failure(self, wait: float) -> tuple[int, int, str] | None:
        """(rank, exit code, reason) of another rank that reported its failure."""
        end = time.monotonic() + wait
        while True:
            for r in range(self.world.size):
                if r != self.world.rank and (raw := self._store_get(f"{_KEY}{r}")) is not None:
                    code, reason = json.loads(raw)
                    return r, code, reason
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    def _release(self) -> None:
        """Closes this rank's connections, so a peer blocked in a collective fails now."""
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass

    def _fail(self, e: BaseException):
        lost = is_lost_peer(e)
        peer = self._peer_failure(wait=2.0 if lost else 0.0) if not isinstance(e, HeedfulError) else None
        if peer is None and not lost:  # this rank's own failure
            code = getattr(e, "exit_code", 1) if isinstance(e, HeedfulError) else 1
            reason = str(e) if isinstance(e, HeedfulError) else f"{type(e).__name__}: {_first_line(e)}"
            self._store_set(f"{_KEY}{self.world.rank}", json.dumps([code, reason]))
            self._release()
            _torchrun_error_file(f"{self._name()}: {reason}")
            if self.main:
                self._store_set(_REPORTED, "1")
                self._linger()
                raise e
            if self._store is not None:
                self._wait_reported(5.0)
            self._exit(code)
        if peer is not None:
            r, code, reason = peer
            message = f"rank {r} of {self.world.size} failed: {reason}"
        else:
            code, message = 1, (f"lost contact with another rank, which stopped without a word (killed? out of "
                                f"memory?): {_first_line(e)}")
        self._release()
        _torchrun_error_file(f"{self._name()}: {message}")
        if self.main:
            self._store_set(_REPORTED, "1")
            self._linger()
            raise RankError(f"{message} (nothing was written to the store)", code) from None
        if peer is None and not self._wait_reported(2.0):  # rank 0 is gone too: say it here
            print(f"heedful: error: {self._name()}: {message}", file=self._stderr or sys.stderr, flush=True)
        self._exit(code)

    def _exit(self, code: int):
        self._store_set(f"{_EXITED}{self.world.rank}", "1")
        raise SystemExit(code) from None

    def _linger(self, seconds: float = 3.0) -> None:
        """Rank 0 hosts the key-value store when no torchrun agent does (the ranks were
        started by hand): it waits, briefly, for the others to have read it before going."""
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            return
        end = time.monotonic() + seconds
        for r in range(1, self.world.size):
            while self._store_get(f"{_EXITED}{r}") is None and time.monotonic() < end:
                time.sleep(0.05)

    def _wait_reported(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._store_get(_REPORTED) is not None:
                return True
            time.sleep(0.05)
        return False


def _torchrun_error_file(message: str) -> None:
    """torchrun's report names each failed rank's reason from this file (else a link)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w") as f:
                json.dump({"message": f"heedful: error: {message}", "timestamp": int(time.time())}, f)
        except OSError:
            pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def session_digest(session) -> dict:
    """What every rank of a run must agree on: the stream, what is resident, pins, drops."""
    return {"ids": list(session.token_ids), "retained": session.retained(), "pins": session.pins(),
            "dropped": session.dropped(), "evicted": session.stats().evicted}


def start(tp: str | None, **placement) -> Ranks:
    """This process's Ranks: alone without `tp`; under torchrun with it (refused elsewhere,
    one line), joined to the others, and silent unless it is rank 0. `placement`: the
    other options that place the model (device, device_map, adapter, ...), checked first so
    that a refusal is one line before any process waits for another."""
    check_options(tp, **placement)
    if tp is None:
        return Ranks()
    world = require_torchrun(tp)
    ranks = Ranks(world)
    ranks.silence()
    connect(world)
    import torch.distributed as dist

    ranks._store = dist.distributed_c10d._get_default_store()
    return ranks


class Recording:
    """Where a run of `heedful generate` records: nowhere (no --db, no --session); into the
    store as it goes (one process); or, in a parallel run, on rank 0 only and atomically,
    committed by `finish` once every rank agrees (the others open a store only to read a
    session they continue)."""

    def __init__(self, ranks: Ranks, db, session_id: int | None, title: str | None):
        from pathlib import Path

        from heedful.store import Store, default_db_path

        self.ranks, self.session_id, self.title = ranks, session_id, title
        self.wanted = db is not None or session_id is not None
        self.path = Path(db) if db is not None else default_db_path()
        self.store = None
        if not self.wanted:
            return
        if not ranks.parallel:  # a run that fails leaves no new file behind
            self.store = Store.open(db, create=session_id is None, keep_empty=False)
        elif session_id is not None:
            self.store = Store.open(db, create=False) if ranks.main else Store.open(db, readonly=True)
        elif ranks.main:  # a new session lands whole at the end: check now that it can
            from heedful.store.db import check_writable

            check_writable(self.path)
            if self.path.exists():
                Store.open(self.path, create=False).close()

    @property
    def atomic(self) -> bool:
        return self.ranks.parallel

    def stored_model(self) -> str | None:
        return self.store.session(self.session_id).config.get("model") if self.session_id is not None else None

    def new_recorder(self):
        """The recorder of a new session (None: the session records nothing). In one
        process it is held (atomic) until the command's checks pass and it calls release()."""
        if not self.wanted:
            return None
        if not self.atomic:
            return self.store.new_session(title=self.title, atomic=True)

        def make():
            from heedful.store import SessionRecorder

            return SessionRecorder(atomic=True, title=self.title)

        return self.ranks.recorder(make)

    def finish(self, session) -> int | None:
        """Every rank agrees on the session; rank 0 commits an atomic recording. The
        session's id in the store (None when not recorded)."""
        self.ranks.agree_session(session)
        rec = session.recorder
        if self.atomic and self.wanted and self.ranks.main:
            if self.store is not None:
                return rec.commit(self.store)
            from heedful.store import Store

            with Store.open(self.path, keep_empty=False) as store:
                return rec.commit(store)
        return getattr(rec, "session_id", None)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
