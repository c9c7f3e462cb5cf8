"""Opening a store: checks, pragmas, migrations, and SQLite errors turned into one line."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
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


class StoreFault(HeedfulError):
    """Not bad input: the disk is full, or failed (exit 1)."""

    exit_code = 1


def describe(path, e: sqlite3.Error) -> str:
    msg = str(e)
    if "disk is full" in msg or "disk I/O error" in msg:
        return f"{path}: cannot write the database: {msg} (a full or failing disk?)"
    if isinstance(e, sqlite3.DatabaseError) and any(
            s in msg for s in ("malformed", "not a database", "encrypted", "disk image")):
        return f"{path}: the database is corrupt ({msg})"
    if "readonly" in msg:
        return f"{path}: the database is read-only here ({msg})"
    if "locked" in msg or "busy" in msg:
        return f"{path}: the database is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s)"
    return f"{path}: sqlite error: {msg}"


@contextlib.contextmanager
def sqlite_errors(path):
    """SQLite failures (corrupt file, locked, disk full) become a one-line HeedfulError."""
    try:
        yield
    except sqlite3.Error as e:
        msg = describe(path, e)
        raise (StoreFault if "(a full or failing disk?)" in msg else HeedfulError)(msg) from None


def check_regular(path, what: str = "") -> None:
    """Refuses (one line) a path that exists but is not a regular file (a FIFO, a device, a
    socket), before anything opens it: opening a FIFO to read waits for a writer forever.
    A path with bytes that are not UTF-8 is refused too."""
    path = str(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise HeedfulError(f"{what}{path!r}: the path is not valid UTF-8") from None
    try:
        st = os.stat(path)
    except OSError:
        return  # missing (or unreachable): the caller says which
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
    raise HeedfulError(f"{what}{path}: is {kind}, not a regular file")


def check_file(path: Path, create: bool) -> None:
    """A file SQLite can open: a regular file (check_regular), not a directory, present
    unless `create`, SQLite's header."""
    check_regular(path)
    if path.is_dir():
        raise HeedfulError(f"{path}: is a directory, not a database file")
    if not path.exists():
        if not create:
            raise HeedfulError(f"{path}: no such database")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise HeedfulError(f"{path}: cannot read: {e.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise HeedfulError(f"{path}: not an SQLite database")


def check_writable(path: Path) -> None:
    """Refuses (one line) a path where a database cannot be written, creating nothing: a
    directory, a file without write permission or in a folder that is not writable (WAL
    makes -wal and -shm files beside it), or, for a missing file, a nearest existing
    ancestor that is not a folder or not writable."""
    path = Path(path)
    if path.is_dir():
        raise HeedfulError(f"{path}: is a directory, not a database file")
    folder = path.parent
    if path.exists():
        if not os.access(path, os.W_OK):
            raise HeedfulError(f"{path}: the database is read-only (no write permission on the file)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HeedfulError(f"{path}: the folder {folder} is not writable (SQLite makes {path.name}-wal "
                               f"and {path.name}-shm beside the database)")
        return
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise HeedfulError(f"{path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HeedfulError(f"{path}: the folder {folder} is not writable")


def sqlite_uri(path: Path, readonly: bool) -> str:
    """The URI SQLite opens. For reading only, where the file and its folder are writable:
    mode=rw (the caller sets query_only), so that closing removes the -wal/-shm files as a
    writer's close does (a mode=ro connection leaves them behind, owned by whoever read);
    elsewhere mode=ro, and immutable=1 where the folder is not writable and no -wal file
    exists, since SQLite cannot make the -wal/-shm files a WAL database needs even to be
    read (immutable: no locks, nothing made beside it)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))
    if not readonly:
        return uri + "?mode=rwc"
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK | os.X_OK) and os.access(path, os.W_OK):
        return uri + "?mode=rw"
    if not os.access(folder, os.W_OK | os.X_OK) and not os.path.exists(f"{path}-wal"):
        return uri + "?mode=ro&immutable=1"
    return uri + "?mode=ro"


def check_version(path: Path, db: sqlite_utils.Database, readonly: bool) -> int:
    """The schema version, once the database is known to be a heedful store this code reads."""
    try:
        version = schema.current_version(db)
    except ValueError as e:
        raise HeedfulError(f"{path}: {e} (a hand-edited database?)") from None
    if version is None:
        raise HeedfulError(f"{path}: an SQLite database, but not a heedful store")
    if version > schema.VERSION:
        raise HeedfulError(f"{path}: written by a newer heedful (schema version {version}; this "
                           f"heedful reads up to {schema.VERSION}): upgrade heedful to open it")
    if readonly and version == 0:
        raise HeedfulError(f"{path}: an empty database, not yet a heedful store")
    if readonly and version < schema.VERSION:
        raise HeedfulError(f"{path}: schema version {version}, older than this heedful's "
                           f"({schema.VERSION}), and opened read-only: open it once for writing to upgrade it")
    missing = schema.missing_tables(db) if version == schema.VERSION else []
    if missing:
        raise HeedfulError(f"{path}: a heedful store whose table{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing (a hand-edited database?)")
    return version


def connect(path: Path, create: bool = True, readonly: bool = False) -> tuple[sqlite_utils.Database, str]:
    """Opens a heedful database; returns it and the URI SQLite opened.

    Writing (the default): created if missing (when `create`), switched to WAL, migrated.
    readonly: opened for reading only (see sqlite_uri; writes are refused), nothing is
    created, switched or migrated, so a database in a read-only file or folder can be read."""
    path = Path(path)
    check_file(path, create and not readonly)
    if not readonly:
        check_writable(path)
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise HeedfulError(f"{path}: cannot make its folder: {e.strerror}") from None
    uri = sqlite_uri(path, readonly)
    with sqlite_errors(path):
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT);
        # check_same_thread=False: the recorder's flush thread writes under its own lock.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if readonly:
                conn.execute("PRAGMA query_only = ON")
            db = sqlite_utils.Database(conn)
            # refused before anything is written: the journal mode lives in the file's header
            version = check_version(path, db, readonly)
            if readonly:
                return db, uri
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise HeedfulError(f"{path}: cannot switch the database to WAL mode")
            # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS)
            conn.execute("PRAGMA synchronous = NORMAL")
            if version < schema.VERSION:
                schema.migrate(db, version)
            return db, uri
        except BaseException:
            conn.close()
            raise
