"""heedful.store: sessions, tokens, the event log, evictions and search in SQLite.

    store = Store.open("heedful.db")
    rec = store.new_session()            # implements heedful.selector.recorder.Recorder
    session = Session(model, tok, recorder=rec)
    ...
    store.sessions(); store.load(id); store.events(id); store.search("vault")

The store imports neither the engine nor the UI: it is a sink and a reader.
"""

from heedful.store.db import default_db_path
from heedful.store.recorder import SessionRecorder
from heedful.store.state import StreamState
from heedful.store.store import SessionData, SessionInfo, Store

__all__ = ["Store", "SessionRecorder", "SessionInfo", "SessionData", "StreamState", "default_db_path"]
