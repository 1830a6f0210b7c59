"""What a model path must be before anything reads it: a regular file, or a link to one.

Opening a FIFO waits for a writer that may never come, and a device may never end,
so a path is judged by its type before it is read. Every reader (`inspect_model`, a
backend's header check) words a bad path the same way.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import InvalidModelFile

__all__ = ["check_regular", "open_problem", "type_problem"]

# How each kind of file that is not a regular one is named, in the order checked.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_problem(error: OSError) -> str:
    """What a failed `stat` or `open` of a model path means, and what to do about it."""
    if error.errno == errno.ELOOP:
        return (
            "is a symlink loop: its links lead back to themselves and never to a file; "
            "point the link at the model file"
        )
    if isinstance(error, FileNotFoundError):
        return "no such file; check the path"
    if isinstance(error, IsADirectoryError):  # Python's own open refuses one before fstat
        return _instead("a directory")
    if isinstance(error, PermissionError):
        return "permission denied; make the file readable by this user (chmod a+r)"
    return f"cannot be opened: {error.strerror or error}"


def type_problem(mode: int) -> str | None:
    """None for a regular file; otherwise what the path is instead (`st_mode` says)."""
    if stat.S_ISREG(mode):
        return None
    return _instead(next((name for is_kind, name in _KINDS if is_kind(mode)), "a special file"))


def _instead(kind: str) -> str:
    return f"is {kind}, not a model file"


def check_regular(path: str) -> None:
    """Raise `InvalidModelFile` unless `path` is a regular file or a symlink to one."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise InvalidModelFile(path, open_problem(error)) from None
    problem = type_problem(mode)
    if problem is not None:
        raise InvalidModelFile(path, problem)
