"""One writer per session: a process that records into a stored session holds a claim on
it, and a second process that would write the same session is refused in one line.

The claim is an abstract Unix socket bound to a name made of the database file's device,
inode and the session id: the kernel holds it, so it ends with the process however that
ends (kill -9 included) and leaves no file behind. Claims are counted within a process (a
process may hold one session in several places, the TUI's reopen for instance). Abstract
sockets are Linux's; elsewhere a claim is granted without a check (docs/store.md).
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from heedful.errors import HeedfulError

_held: dict[str, list] = {}  # name -> [socket or None, count]
_lock = threading.Lock()


def _name(path, session_id: int) -> str:
    st = os.stat(path)
    return f"heedful/writer/{st.st_dev}/{st.st_ino}/{session_id}"


class Claim:
    """A held claim; release() (or the process's end) gives it up."""

    def __init__(self, name: str):
        self.name = name
        self._released = False

    def release(self) -> None:
        with _lock:
            if self._released:
                return
            self._released = True
            entry = _held.get(self.name)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del _held[self.name]
                if entry[0] is not None:
                    entry[0].close()


def claim(path, session_id: int) -> Claim:
    """Claims session `session_id` of the database at `path` for writing; HeedfulError
    (one line) when another process holds it."""
    name = _name(path, session_id)
    with _lock:
        entry = _held.get(name)
        if entry is not None:
            entry[1] += 1
            return Claim(name)
        sock = None
        if sys.platform.startswith("linux"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind("\0" + name)
            except OSError:
                sock.close()
                raise HeedfulError(f"{path}: session {session_id} is being written by another process "
                                   "(one writer per session): try again when it has ended") from None
        _held[name] = [sock, 1]
        return Claim(name)
