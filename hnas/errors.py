"""The one exception type for mistakes a user can fix (bad config, missing file, malformed input)."""


class HnasError(Exception):
    """A user-facing error: its message says what is wrong and how to fix it.

    `run.py` prints it without a traceback; library callers can catch it.
    """


def require(ok, key, value, need):
    """Raise the HnasError of a bad setting: `key=value` and what it needs to be."""
    if not ok:
        raise HnasError(f"{key}={value!r} is invalid: {need}")
