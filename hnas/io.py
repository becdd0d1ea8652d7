"""File writes that never leave a half-written file behind, and append-only logs of one line per record that
a kill cannot corrupt (the metric and query tables)."""

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path, data):
    """Write `data` to `path` via a temporary file and a rename, so readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def complete_lines(path):
    """The complete lines of a log (bytes). The text after the last newline is empty, or a line cut short by
    a kill: never a whole record."""
    return Path(path).read_bytes().split(b"\n")[:-1]


def drop_partial_last_line(path):
    """Truncate a line cut short by a kill, so the next append starts a line of its own."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)


def append_line(handle, text):
    """Append one record line to an open log and fsync it, so a finished record survives a kill."""
    handle.write(text + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def try_lock(handle):
    """An exclusive lock on an open file, taken without waiting: False when another open file holds it. The
    lock ends with the file, however its process ends, so a killed run never leaves a stale one."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def locked(path):
    """An exclusive lock on `path` (created if absent) for the block: one process at a time."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
