"""llama.cpp's naming of split model files (`name-00001-of-00003.gguf`), in one place.

The CLI groups local parts by it and the hub fetches every part by it; a split
model is loaded by its first part, and llama-server finds the others beside it.
"""

from __future__ import annotations

import posixpath
import re

__all__ = ["SPLIT_NAME", "split_parts"]

SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def split_parts(path: str) -> tuple[str, ...]:
    """Every part named like `path`'s split set, first part first (just `path` for a whole
    file). Works on file paths and on a repository's `/`-separated names alike."""
    match = SPLIT_NAME.match(posixpath.basename(path))
    if match is None:
        return (path,)
    folder, count = posixpath.dirname(path), int(match["count"])
    return tuple(
        posixpath.join(folder, f"{match['stem']}-{index:05d}-of-{count:05d}.gguf")
        for index in range(1, count + 1)
    )
