"""Opening a store: checks, pragmas, migrations, and SQLite errors turned into one line."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import sqlite_utils

from heedful.errors import HeedfulError
from heedful.store import schema

BUSY_TIMEOUT_MS = 10_000
SQLITE_MAGIC = b"SQLite format 3\x00"


def default_db_path() -> Path:
    """$HEEDFUL_DB, else $XDG_DATA_HOME/heedful/heedful.db (~/.local/share/heedful/heedful.db)."""
    if os.environ.get("HEEDFUL_DB"):
        return Path(os.environ["HEEDFUL_DB"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "heedful" / "heedful.db"


def describe(path, e: sqlite3.Error) -> str:
    msg = str(e)
    if isinstance(e, sqlite3.DatabaseError) and any(
            s in msg for s in ("malformed", "not a database", "encrypted", "disk image")):
        return f"{path}: the database is corrupt ({msg})"
    if "locked" in msg or "busy" in msg:
        return f"{path}: the database is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s)"
    return f"{path}: sqlite error: {msg}"


@contextlib.contextmanager
def sqlite_errors(path):
    """SQLite failures (corrupt file, locked, disk full) become a one-line HeedfulError."""
    try:
        yield
    except sqlite3.Error as e:
        raise HeedfulError(describe(path, e)) from None


def check_file(path: Path, create: bool) -> None:
    if path.is_dir():
        raise HeedfulError(f"{path}: is a directory, not a database file")
    if not path.exists():
        if not create:
            raise HeedfulError(f"{path}: no such database")
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise HeedfulError(f"{path}: cannot read: {e.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise HeedfulError(f"{path}: not an SQLite database")


def connect(path: Path, create: bool = True) -> sqlite_utils.Database:
    """Opens (creating and migrating as needed) a heedful database."""
    path = Path(path)
    check_file(path, create)
    with sqlite_errors(path):
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT);
        # check_same_thread=False: the recorder's flush thread writes under its own lock.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            db = sqlite_utils.Database(conn)
            # refused before anything is written: the journal mode lives in the file's header
            version = schema.current_version(db)
            if version is None:
                raise HeedfulError(f"{path}: an SQLite database, but not a heedful store")
            if version > schema.VERSION:
                raise HeedfulError(f"{path}: written by a newer heedful (schema version {version}; this "
                                   f"heedful reads up to {schema.VERSION}): upgrade heedful to open it")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise HeedfulError(f"{path}: cannot switch the database to WAL mode")
            # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS)
            conn.execute("PRAGMA synchronous = NORMAL")
            if version < schema.VERSION:
                schema.migrate(db, version)
            return db
        except BaseException:
            conn.close()
            raise
