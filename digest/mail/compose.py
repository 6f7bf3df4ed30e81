"""The message as it leaves: headers, a plain-text and an HTML alternative, DKIM when set.

Built as bytes directly, once per message: the email package's generator took most of the time
of a 100,000-reader run. Only the three headers that carry untrusted text (From, To, Subject)
go through the email library's folding and RFC 2047 encoding; the plain text is quoted-printable
(binascii), the HTML plain 7-bit ASCII with its other characters as character references
(quoted-printable where it cannot be); the headers that carry URLs and ids are written exactly
as given. Then the header
block of these very bytes is read back by RFC 5322's grammar and must hold exactly the headers
written: the last line of defence against header injection, whatever slipped past the escaping.
"""

from __future__ import annotations

import binascii
import re
import secrets
from datetime import datetime
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path

from digest.config import Config
from digest.errors import RenderError
from digest.mail.blocks import RAW_TEXT
from digest.mail.links import Signer
from digest.mail.render import Rendered, header_text, unsubscribe_url
from digest.profiles import Profile
from digest.text import has_control

# Headers that carry URLs and ids. Mail providers read them raw (RFC 2369, RFC 8058), so they are
# written exactly as given: folding would turn a URL longer than a line into an RFC 2047
# encoded-word, which Python's own parser decodes but Gmail does not.
RAW_HEADERS = frozenset({"message-id", "list-unsubscribe", "list-unsubscribe-post", "list-id"})
# RFC 5322's hard limit for a line, CRLF excluded, and the length it asks headers to keep to.
MAX_LINE = 998
SHORT_LINE = 76
CRLF = b"\r\n"

# Signed so that a forwarder cannot strip or change the one-click unsubscribe (RFC 8058 asks
# for List-Unsubscribe and List-Unsubscribe-Post to be covered by the signature).
DKIM_HEADERS = [
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"List-Id",
    b"MIME-Version",
    b"Content-Type",
]


def _folded(name: str, value: str) -> bytes:
    """A header with untrusted text, folded and encoded by the email library (SMTP policy):
    parsed into its header class first, so non-ASCII text becomes RFC 2047 encoded words.

    A short, plain ASCII value is written as it is: the library would write the very same
    bytes (tests/test_render.py holds the two side by side), at a tenth of a millisecond a
    header that a 100,000-reader run pays three times a message."""
    if _plain(name, value):
        return f"{name}: {value}".encode() + CRLF
    return _folded_by_library(name, value)


def _plain(name: str, value: str) -> bool:
    return (
        bool(value)
        and len(name) + 2 + len(value) <= SHORT_LINE
        and value.isascii()
        and value.isprintable()
        and "=?" not in value
        and value == " ".join(value.split())
    )


@lru_cache(maxsize=64)
def _folded_by_library(name: str, value: str) -> bytes:
    # Cached: the From header is the same for every message of a run.
    return SMTP.fold_binary(*SMTP.header_store_parse(name, value))


def _raw(name: str, value: str) -> bytes:
    if not value.isascii() or has_control(value):
        raise RenderError(f"{name}: not a plain ASCII value; not sent")
    if len(name) + 2 + len(value) > MAX_LINE:
        raise RenderError(
            f"{name}: longer than one header line may be ({MAX_LINE} characters)",
            "shorten [web] base_url",
        )
    return f"{name}: {value}".encode() + CRLF


def _lf_lines(body: bytes) -> bytes:
    """The body with LF line ends and a final one (CR and LF bytes never occur inside a
    multi-byte UTF-8 sequence, so line ends are found in the bytes)."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body if body.endswith(b"\n") else body + b"\n"


def _qp(body: bytes) -> bytes:
    """A UTF-8 body as quoted-printable with CRLF line ends."""
    encoded = binascii.b2a_qp(_lf_lines(body), quotetabs=False, istext=True)
    return encoded.replace(b"\n", CRLF)


# A reference to a C1 control (U+0080-U+009F) reads as a Windows-1252 character in HTML.
_C1_REF = re.compile(rb"&#1(?:2[89]|[3-5][0-9]);")
# Below RFC 5322's 998: some older relays (Postfix before 2.9, sendmail's default mailer)
# break a line over 990 bytes, which could fall inside a link or a reference.
MAX_7BIT_LINE = 900


def _ascii_html(html: str, raw_text_checked: bool = False) -> bytes | None:
    """The HTML as 7-bit text, every other character written as a character reference
    (`&#8230;`), which an HTML parser reads back as the character anywhere but in CSS or a
    script; None where that would change the document: a non-ASCII character before the last
    `<style>`, `<script>` (or such) has closed, a C1 control, a NUL, or a line over
    MAX_7BIT_LINE.

    Quoted-printable cost a third of a millisecond per 35 KB digest and writes each of the
    HTML's many "=" as "=3D"; this is a third of the time and a smaller message.
    ``raw_text_checked``: the renderer knows the raw-text elements close in a first stretch of
    ASCII (`Rendered.raw_text_checked`), and the search through the whole document, a third
    of this function's time, is left out.
    """
    if not raw_text_checked:
        last = max(RAW_TEXT.finditer(html), key=lambda m: m.start(), default=None)
        # Group 1 is "/" for a closing tag: an element left open holds the rest of the document.
        if last is not None and (not last.group(1) or not html[: last.end()].isascii()):
            return None
    body = _lf_lines(html.encode("ascii", "xmlcharrefreplace"))
    if b"\x00" in body or _C1_REF.search(body):
        return None
    if max(map(len, body.split(b"\n"))) > MAX_7BIT_LINE:
        return None
    return body.replace(b"\n", CRLF)


def _part(subtype: str, body: bytes, ascii_body: bytes | None = None) -> bytes:
    """One alternative: ``ascii_body`` as it is (7bit) when given, else ``body`` as
    quoted-printable."""
    encoding = b"7bit" if ascii_body is not None else b"quoted-printable"
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"'.encode()
        + CRLF
        + b"Content-Transfer-Encoding: "
        + encoding
        + CRLF * 2
        + (ascii_body if ascii_body is not None else _qp(body))
    )


def compose(
    cfg: Config,
    profile: Profile,
    rendered: Rendered,
    message_id: str,
    now: datetime,
    signer: Signer | None = None,
) -> bytes:
    """The exact bytes every attempt sends: standard headers, List-Unsubscribe, text then
    HTML alternatives, DKIM-signed when configured."""
    local, _, domain = cfg.smtp.from_address.partition("@")
    to_local, _, to_domain = profile.email.partition("@")
    sender = Address(header_text(cfg.smtp.from_name), local, domain)
    reader = Address(header_text(profile.name), to_local, to_domain)
    unsubscribe = unsubscribe_url(cfg, profile.email, signer)
    # A boundary of "=" runs cannot occur in quoted-printable, which writes "=" as "=3D".
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    names: list[str] = []

    def add(name: str, line: bytes) -> bytes:
        names.append(name.lower())
        return line

    head = b"".join(
        [
            add("From", _folded("From", str(sender))),
            add("To", _folded("To", str(reader))),
            add("Subject", _folded("Subject", rendered.subject)),
            add("Date", _raw("Date", format_datetime(now))),
            add("Message-ID", _raw("Message-ID", message_id)),
            add("List-Unsubscribe", _raw("List-Unsubscribe", f"<{unsubscribe}>")),
            add(
                "List-Unsubscribe-Post", _raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
            ),
            add("List-Id", _raw("List-Id", f"Paper digest <digest.{domain}>")),
            add("Auto-Submitted", _raw("Auto-Submitted", "auto-generated")),
            add("MIME-Version", _raw("MIME-Version", "1.0")),
            add(
                "Content-Type",
                b"Content-Type: multipart/alternative;"
                + CRLF
                + f' boundary="{boundary}"'.encode()
                + CRLF,
            ),
        ]
    )
    _check_headers(head + CRLF, names, profile.email)
    sep = f"--{boundary}".encode()
    ascii_html = _ascii_html(rendered.html, rendered.raw_text_checked)
    raw = b"".join(
        [
            head,
            CRLF,
            sep + CRLF,
            _part("plain", rendered.text_bytes),
            sep + CRLF,
            _part("html", rendered.html_bytes, ascii_html),
            sep + b"--" + CRLF,
        ]
    )
    return _dkim(cfg, raw)


def _check_headers(head: bytes, written: list[str], who: str) -> None:
    if header_names(head) != written:
        raise RenderError(
            f"message for {who} would not re-parse to the same headers; not sent",
            "a profile or feed value contains header syntax; check `digest preview`",
        )


# RFC 5322 2.2: a field name is printable US-ASCII but the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+")


def header_names(head: bytes) -> list[str] | None:
    """The field names, lower case and in order, of a header block that ends with its empty
    line; None unless every line is a plain ASCII field or the continuation of one (RFC 5322
    2.2), with CRLF line ends only.

    Stricter than the email package's parser, which takes a stray line as the start of the
    body, and a twentieth of its cost: this runs on every message of a run.
    """
    if not head.endswith(CRLF * 2) or not head.isascii():
        return None
    names: list[str] = []
    for line in head[: -len(CRLF * 2)].split(CRLF):
        if b"\r" in line or b"\n" in line or b"\0" in line:
            return None
        if line[:1] in (b" ", b"\t"):
            if not names or not line.strip():
                return None  # a continuation of nothing, or a line of blanks
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return None
        names.append(name.decode().lower())
    return names


@lru_cache(maxsize=4)
def _key(path: Path, mtime_ns: int) -> bytes:
    """The DKIM key, read once per run (again only when the file changes)."""
    return path.read_bytes()


def _dkim(cfg: Config, raw: bytes) -> bytes:
    smtp = cfg.smtp
    if not (smtp.dkim_selector and smtp.dkim_key_file):
        return raw
    import dkim

    try:
        key = _key(smtp.dkim_key_file, smtp.dkim_key_file.stat().st_mtime_ns)
    except OSError as exc:
        raise RenderError(
            f"smtp.dkim_key_file: cannot read {smtp.dkim_key_file}: {exc.strerror}",
            "point it at the PEM private key of the DKIM selector",
        ) from exc
    domain = smtp.dkim_domain or smtp.from_address.rsplit("@", 1)[-1]
    try:
        signature = dkim.sign(
            raw,
            smtp.dkim_selector.encode(),
            domain.encode(),
            key,
            include_headers=DKIM_HEADERS,
        )
    except dkim.DKIMException as exc:
        raise RenderError(f"DKIM signing failed: {exc}", "check smtp.dkim_key_file") from exc
    return bytes(signature) + raw
