"""The store's schema and its migrations.

Plain tables that Datasette (or the sqlite3 shell) opens as they are:

    sessions   id, title, created, updated, model, config (JSON), state (JSON), tokens
    tokens     session, idx, token_id, text, source (prompt|generated|recalled), created
    events     session, seq, op, args (JSON), tokens (stream length when logged), created
    evictions  session, start_idx, end_idx, reason (window|drop|rewind|budget), tokens, created
    recalls    session, seq, src_start, src_end, new_start, new_end
    chunks     session, start_idx, end_idx, text   (+ chunks_fts: FTS5 over text)

Times are Unix seconds (REAL). `sessions.state` is the token state (pins, drops, evicted
spans; see state.py) as of the last commit, written in the same transaction as the rows it
describes. An event row is the replay-script line {"op": op, **args}.

Migrations are numbered functions applied in order on open; `heedful_schema` holds the
version. A database whose version is newer than this code knows is refused.
"""

from __future__ import annotations

import time

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            title TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            model TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT '{}',
            tokens INTEGER NOT NULL DEFAULT 0
        )""")
    # WITHOUT ROWID: the primary key is the table, so a token costs one b-tree entry.
    db.execute("""
        CREATE TABLE tokens (
            session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            token_id INTEGER NOT NULL,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (session, idx)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE events (
            session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            op TEXT NOT NULL,
            args TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (session, seq)
        )""")
    db.execute("""
        CREATE TABLE evictions (
            id INTEGER PRIMARY KEY,
            session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            start_idx INTEGER NOT NULL,
            end_idx INTEGER NOT NULL,
            reason TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            created REAL NOT NULL
        )""")
    db.execute("CREATE INDEX evictions_session ON evictions(session, start_idx)")
    db.execute("""
        CREATE TABLE recalls (
            session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            src_start INTEGER NOT NULL,
            src_end INTEGER NOT NULL,
            new_start INTEGER NOT NULL,
            new_end INTEGER NOT NULL,
            PRIMARY KEY (session, seq)
        )""")
    # Search works on chunks of whole words (a chunk ends before a token that starts with
    # whitespace), since single tokens are word pieces.
    db.execute("""
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            start_idx INTEGER NOT NULL,
            end_idx INTEGER NOT NULL,
            text TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX chunks_session ON chunks(session, start_idx)")
    # The FTS table and triggers sqlite-utils' enable_fts(create_triggers=True) makes, written
    # out because enable_fts uses executescript, which would commit this migration halfway.
    db.execute("CREATE VIRTUAL TABLE chunks_fts USING FTS5 (text, "
               "tokenize='unicode61 remove_diacritics 2', content=[chunks])")
    db.execute("""
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
          INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
        END""")
    db.execute("""
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
          INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES('delete', old.rowid, old.text);
        END""")
    db.execute("""
        CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
          INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES('delete', old.rowid, old.text);
          INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
        END""")


MIGRATIONS = [_v1]  # MIGRATIONS[k] brings a database from version k to k + 1
VERSION = len(MIGRATIONS)


TABLES = ("sessions", "tokens", "events", "evictions", "recalls", "chunks", "chunks_fts")  # as of VERSION


def current_version(db: sqlite_utils.Database) -> int | None:
    """The schema version, 0 for an empty database, None for a database that is not ours.
    ValueError (saying what is wrong) for a heedful_schema table that holds anything but
    versions from 1 up, one a row (a hand-edited one)."""
    if "heedful_schema" in db.table_names():
        versions = [v for (v,) in db.execute("SELECT version FROM heedful_schema")]
        for v in versions:
            if type(v) is not int or v < 1:
                raise ValueError(f"heedful_schema holds version {v!r}, not a whole number from 1")
        if not versions:
            raise ValueError("heedful_schema holds no version")
        return max(versions)
    return 0 if not db.table_names() else None


def missing_tables(db: sqlite_utils.Database) -> list[str]:
    """The tables of a current store that this one lacks."""
    have = set(db.table_names())
    return [t for t in TABLES if t not in have]


def migrate(db: sqlite_utils.Database, version: int) -> None:
    """Applies the missing migrations, each in its own transaction."""
    conn = db.conn
    for k in range(version, VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-read under the write lock: another process may have migrated meanwhile
            if k == 0 and "heedful_schema" in db.table_names():
                conn.execute("ROLLBACK")
                continue
            if k == 0:
                db.execute("CREATE TABLE heedful_schema (version INTEGER PRIMARY KEY, applied REAL NOT NULL)")
            elif db.execute("SELECT max(version) FROM heedful_schema").fetchone()[0] > k:
                conn.execute("ROLLBACK")
                continue
            MIGRATIONS[k](db)
            db.execute("INSERT INTO heedful_schema (version, applied) VALUES (?, ?)", [k + 1, time.time()])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
