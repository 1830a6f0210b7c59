"""A baseline JPEG writer for the tests: grey pictures, standard library only.

The image tests need a JPEG made from the same pixels as a PNG, and nothing here
encodes one (no imaging package is installed). A baseline JPEG with one component is
small to write: each 8x8 block's DCT, quantised by a table of ones (so the loss is the
rounding alone), in zig-zag order, Huffman-coded with tables of fixed-length codes (any
prefix code is valid JPEG, and fixed lengths need no statistics).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

__all__ = ["jpeg"]

_BLOCK = 8
_ZIGZAG = sorted(
    ((y, x) for y in range(_BLOCK) for x in range(_BLOCK)),
    key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 == 0 else p[0]),
)
_COS = [[math.cos((2 * x + 1) * u * math.pi / 16) for x in range(_BLOCK)] for u in range(_BLOCK)]
# Symbols: a DC difference's size (0 to 11); an AC run of zeros and size (run << 4 | size,
# sizes 1 to 10), end of block (0x00) and sixteen zeros (0xF0). Each table gives every
# symbol a code of one length: 4 bits for the 12 DC ones, 8 for the 162 AC ones.
_DC_SYMBOLS = list(range(12))
_AC_SYMBOLS = [0x00, 0xF0, *(run << 4 | size for run in range(16) for size in range(1, 11))]
_DC_LENGTH, _AC_LENGTH = 4, 8


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _huffman_table(kind: int, symbols: list[int], length: int) -> bytes:
    counts = [len(symbols) if n == length else 0 for n in range(1, 17)]
    return bytes([kind]) + bytes(counts) + bytes(symbols)


def _dct(block: list[list[float]]) -> list[list[float]]:
    def scale(u: int) -> float:
        return math.sqrt(0.5) if u == 0 else 1.0

    cells = [(y, x) for y in range(_BLOCK) for x in range(_BLOCK)]
    return [
        [
            0.25
            * scale(u)
            * scale(v)
            * sum(block[y][x] * _COS[v][y] * _COS[u][x] for y, x in cells)
            for u in range(_BLOCK)
        ]
        for v in range(_BLOCK)
    ]


def _size_and_bits(value: int) -> tuple[int, int]:
    """JPEG's category of a coefficient and the bits that follow it."""
    size = abs(value).bit_length()
    return size, value if value >= 0 else value + (1 << size) - 1


class _Bits:
    def __init__(self) -> None:
        self.out = bytearray()
        self._value = self._count = 0

    def put(self, value: int, count: int) -> None:
        for shift in range(count - 1, -1, -1):
            self._value = self._value << 1 | (value >> shift) & 1
            self._count += 1
            if self._count == 8:
                self.out.append(self._value)
                if self._value == 0xFF:
                    self.out.append(0)  # a 0xFF in the data is stuffed
                self._value = self._count = 0

    def finish(self) -> bytes:
        if self._count:
            self.put((1 << (8 - self._count)) - 1, 8 - self._count)  # padded with ones
        return bytes(self.out)


def jpeg(width: int, height: int, grey: Callable[[int, int], int]) -> bytes:
    """A baseline greyscale JPEG whose pixel at (x, y) is `grey(x, y)` (0 to 255); the
    sides are multiples of 8."""
    if width % _BLOCK or height % _BLOCK:
        raise ValueError("the sides of this writer's pictures are multiples of 8")
    bits, previous = _Bits(), 0
    for top in range(0, height, _BLOCK):
        for left in range(0, width, _BLOCK):
            block = [
                [grey(left + x, top + y) - 128.0 for x in range(_BLOCK)] for y in range(_BLOCK)
            ]
            coefficients = _dct(block)
            zigzag = [round(coefficients[y][x]) for y, x in _ZIGZAG]
            size, extra = _size_and_bits(zigzag[0] - previous)
            previous = zigzag[0]
            bits.put(_DC_SYMBOLS.index(size), _DC_LENGTH)
            bits.put(extra, size)
            run = 0
            for value in zigzag[1:]:
                if value == 0:
                    run += 1
                    continue
                while run > 15:
                    bits.put(_AC_SYMBOLS.index(0xF0), _AC_LENGTH)
                    run -= 16
                size, extra = _size_and_bits(value)
                bits.put(_AC_SYMBOLS.index(run << 4 | size), _AC_LENGTH)
                bits.put(extra, size)
                run = 0
            if run:
                bits.put(_AC_SYMBOLS.index(0x00), _AC_LENGTH)
    quantised_by_ones = bytes([0]) + bytes([1] * 64)
    frame = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    scan = bytes([1, 1, 0x00, 0, 63, 0])
    return (
        b"\xff\xd8"
        + _segment(0xDB, quantised_by_ones)
        + _segment(0xC0, frame)
        + _segment(0xC4, _huffman_table(0x00, _DC_SYMBOLS, _DC_LENGTH))
        + _segment(0xC4, _huffman_table(0x10, _AC_SYMBOLS, _AC_LENGTH))
        + _segment(0xDA, scan)
        + bits.finish()
        + b"\xff\xd9"
    )
