"""Small pictures made in code, for tests of images in chat (the kit's, and a backend
author's): PNG with the standard library only, so no imaging package is needed."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

__all__ = ["png"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG whose pixel at (x, y) is `pixel(x, y)`."""
    rows = b"".join(
        b"\0" + bytes(channel for x in range(width) for channel in pixel(x, y))
        for y in range(height)
    )  # each row starts with its filter type, 0: none
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )
