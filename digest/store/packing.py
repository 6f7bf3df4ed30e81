"""Stored messages, compressed: 100,000 digests of 30-50 KB a day would add 3-5 GB a day.

A digest's HTML and text compress about five to one. A compressed body starts with a marker no
message can start with (a NUL byte), so bodies stored before compression are read as they are:
no migration, and every attempt still sends exactly the bytes that were planned.

Zstandard, level 1: on real 50 KB digests 0.07-0.09 ms to compress and 0.03 ms to read back,
against zlib's 0.38 and 0.16 ms at its level 3, and 9.4 KB stored where zlib stored 11.7. Level 3
stores 3 % less, but in a run, where each digest is compressed with the caches full of other
work, it took 0.13-0.23 ms to level 1's 0.07-0.09. Bodies zlib compressed (stored by earlier
releases) are still read.
"""

from __future__ import annotations

import threading
import zlib

import zstandard

MARKER = b"\x00zs1"
ZLIB_MARKER = b"\x00dz1"
LEVEL = 1


class _Codecs(threading.local):
    """One compressor and decompressor per thread: each keeps its context between digests
    (cheaper than a new one each time), and neither may be used by two threads at once (the
    engine, the web view and the planners of `digest serve` each have their own)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


def pack(raw: bytes) -> bytes:
    return MARKER + _codecs.compressor.compress(raw)


def unpack(stored: bytes) -> bytes:
    if stored.startswith(MARKER):
        return _codecs.decompressor.decompress(stored[len(MARKER) :])
    if stored.startswith(ZLIB_MARKER):
        return zlib.decompress(stored[len(ZLIB_MARKER) :])
    return stored
