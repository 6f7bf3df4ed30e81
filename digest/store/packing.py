"""Stored messages, compressed: 100,000 digests of 30-50 KB a day would add 3-5 GB a day.

A digest's HTML and text compress about five to one. A compressed body starts with a marker no
message can start with (a NUL byte), so bodies stored before compression are read as they are:
no migration, and every attempt still sends exactly the bytes that were planned.

Zstandard, level 1: on real 50 KB digests 0.07-0.09 ms to compress and 0.03 ms to read back,
against zlib's 0.38 and 0.16 ms at its level 3, and 9.4 KB stored where zlib stored 11.7. Level 3
stores 3 % less, but in a run, where each digest is compressed with the caches full of other
work, it took 0.13-0.23 ms to level 1's 0.07-0.09. Bodies zlib compressed (stored by earlier
releases) are still read.

A digest the pipeline plans is stored as it goes over SMTP after DATA (dot-stuffed, RFC 5321
4.5.2), but for the final dot: the engine sends it as read. Making that form from a message of
unknown line ends took the engine 0.22 ms a 50 KB digest (three counts and a replace over all
of it), on the core that sends; the planner makes it from the message it has just built, whose
line ends are CRLF by construction, with the replace alone. `unpack` gives the message itself
back, whichever way it was stored.
"""

from __future__ import annotations

import re
import threading
import zlib

import zstandard

MARKER = b"\x00zs1"
ZLIB_MARKER = b"\x00dz1"
# Zstandard, and the message in its SMTP form (`as_sent`).
WIRE_MARKER = b"\x00zw1"
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
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


def pack_to_send(message: bytes) -> bytes:
    """A message whose line ends are all CRLF (as digest.mail.compose builds them), stored as
    it is sent."""
    return WIRE_MARKER + _codecs.compressor.compress(dot_stuffed(message))


def unpack(stored: bytes) -> bytes:
    """The message as it was planned, whichever way it was stored."""
    if stored.startswith(WIRE_MARKER):
        return _unstuffed(unpack_to_send(stored))
    if stored.startswith(MARKER):
        return _codecs.decompressor.decompress(stored[len(MARKER) :])
    if stored.startswith(ZLIB_MARKER):
        return zlib.decompress(stored[len(ZLIB_MARKER) :])
    return stored


def unpack_to_send(stored: bytes) -> bytes:
    """The message as it goes after 354 but for the final ".\r\n": CRLF line ends, dot-stuffed,
    ending with CRLF."""
    if stored.startswith(WIRE_MARKER):
        return _codecs.decompressor.decompress(stored[len(WIRE_MARKER) :])
    return as_sent(unpack(stored))


def as_sent(message: bytes) -> bytes:
    """Any message in its SMTP form (`unpack_to_send`): stray CR or LF line ends made CRLF."""
    lf = message.count(b"\n")
    if lf != message.count(b"\r") or lf != message.count(b"\r\n"):
        message = _LINE_ENDS.sub(b"\r\n", message)
    return dot_stuffed(message)


def dot_stuffed(message: bytes) -> bytes:
    """A message with CRLF line ends only, each line that starts with a dot given a second one
    (every line but the first starts after a LF), ending with CRLF."""
    out = (b"." if message.startswith(b".") else b"") + message.replace(b"\n.", b"\n..")
    return out if out.endswith(b"\r\n") else out + b"\r\n"


def _unstuffed(sent: bytes) -> bytes:
    """`dot_stuffed` undone: one dot off each line that starts with one."""
    return (sent[1:] if sent.startswith(b".") else sent).replace(b"\n..", b"\n.")
