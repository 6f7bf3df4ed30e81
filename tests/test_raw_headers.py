"""The header block of a digest as a mail provider reads it: raw bytes off a real SMTP server.

Python's email parser decodes RFC 2047 encoded-words wherever it meets them; Gmail does not in
List-Unsubscribe, so these tests never let the email package read the headers for them.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SmtpServer, digest

# A long real-world base: reverse proxy under a path, as an operator would put it.
LONG_BASE = "https://digest.lab.example.org/" + "/".join(["some-long-path-segment"] * 8)
# Only these may carry encoded-words (display names and free text).
MAY_ENCODE = {"subject", "from", "to"}


def header_lines(raw: bytes) -> list[tuple[str, str, bytes]]:
    """(name, unfolded value, the raw bytes of the field) for each header, in order."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    out = []
    for f in fields:
        name, _, value = f.partition(b":")
        unfolded = re.sub(rb"\r\n[ \t]", b" ", value).strip()
        out.append((name.decode("ascii").lower(), unfolded.decode("ascii"), f))
    return out


def test_list_unsubscribe_leaves_as_a_raw_https_url_with_a_long_base_url(
    site: Path, smtp_server: SmtpServer
) -> None:
    cfg = (site / "digest.toml").read_text()
    (site / "digest.toml").write_text(
        cfg.replace('base_url = "https://papers.example.org"', f'base_url = "{LONG_BASE}"')
    )
    assert len(LONG_BASE) >= 200
    ran = digest("run", cwd=site)
    assert ran.returncode == 0, ran.stderr
    assert len(smtp_server.received) == 2
    for received in smtp_server.received:
        headers = header_lines(received.data)
        by_name = {name: value for name, value, _ in headers}
        unsubscribe = [f for name, _, f in headers if name == "list-unsubscribe"]
        assert len(unsubscribe) == 1
        # One line, the URL in angle brackets, exactly as RFC 2369 and RFC 8058 want it.
        assert re.fullmatch(
            rb"List-Unsubscribe: <" + re.escape(LONG_BASE.encode()) + rb"/u/[A-Za-z0-9._-]+>",
            unsubscribe[0],
        ), unsubscribe[0]
        assert by_name["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(
            r"<digest\.[0-9-]+\.[0-9a-f]+@papers\.example\.org>", by_name["message-id"]
        )
        assert by_name["list-id"] == "Paper digest <digest.papers.example.org>"
        for name, value, raw_field in headers:
            if name not in MAY_ENCODE:
                assert "=?" not in value, raw_field
            assert all(len(line) <= 998 for line in raw_field.split(b"\r\n")), name


def test_a_base_url_that_cannot_go_into_a_header_is_refused_with_the_key(site: Path) -> None:
    cfg = (site / "digest.toml").read_text()
    (site / "digest.toml").write_text(
        cfg.replace(
            'base_url = "https://papers.example.org"', 'base_url = "https://bücher.example/x y"'
        )
    )
    ran = digest("run", cwd=site)
    assert ran.returncode != 0
    assert "web.base_url" in ran.stderr and "ASCII" in ran.stderr
    assert "Traceback" not in ran.stderr
