"""Issue 5's acceptance checks on a digest built from the real arXiv RSS file in ../shared/data.

The real listing (1,504 items) gets one hostile item added: header-injection attempts in its
title and author, and live HTML in its abstract. Two subscribers follow its author, one of them
with an encoded-word trick as their display name. The whole cycle runs to a real SMTP server;
the messages it receives are checked header by header and rendered in Chromium.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import Config, SmtpConfig, SourceConfig, WebConfig
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import SHARED, SmtpServer, write_profile
from tests.test_browser import measure
from tests.test_render import _Elements

RSS = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
NOW = datetime(2024, 11, 28, 12, 0, tzinfo=UTC)
TITLE = "Attention&#13;&#10;Bcc: x@y =?UTF-8?Q?=0A?=Bcc: x@y &lt;script&gt;alert(1)&lt;/script&gt;"
ABSTRACT = (
    "&lt;img src=x onerror=alert(1)&gt; "
    '&lt;form action="https://evil.example"&gt;&lt;input&gt;&lt;/form&gt; '
    '&lt;a href="javascript:alert(2)"&gt;click&lt;/a&gt; with $\\mu$-maths and $1&lt;p&lt;2$.'
)
HOSTILE_ITEM = f"""
<item>
  <title>{TITLE}</title>
  <link>https://arxiv.org/abs/2411.99999</link>
  <description>arXiv:2411.99999v1 Announce Type: new
Abstract: {ABSTRACT}</description>
  <guid isPermaLink="false">oai:arXiv.org:2411.99999v1</guid>
  <category>cs.LG</category>
  <pubDate>Thu, 28 Nov 2024 00:00:00 -0500</pubDate>
  <arxiv:announce_type>new</arxiv:announce_type>
  <dc:creator>Eve Hostile, Mallory&#13;&#10;Bcc: x@y</dc:creator>
</item>
"""
SUBSCRIBERS = {
    "zoe": 'email = "zoe@example.org"\nname = "Zoë Ünïcode"\n',
    "trick": 'email = "trick@example.org"\nname = "=?UTF-8?Q?=0A?=Bcc: x@y"\n',
}
INTERESTS = '[interests]\nauthors = ["Eve Hostile"]\nkeywords = ["attention", "language models"]\n'
ONCE = ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post")


@pytest.fixture
def delivered(tmp_path: Path, smtp_server: SmtpServer, store: Store) -> list[bytes]:
    feed = tmp_path / "listing.xml"
    real = RSS.read_text(encoding="utf-8")
    feed.write_text(real.replace("</channel>", HOSTILE_ITEM + "</channel>", 1), encoding="utf-8")
    for name, head in SUBSCRIBERS.items():
        write_profile(tmp_path / "subscribers", name, head + INTERESTS)
    key = tmp_path / "key"
    key.write_text("k" * 40)
    cfg = Config(
        data_dir=tmp_path / "data",
        subscribers_dir=tmp_path / "subscribers",
        smtp=SmtpConfig(
            host=smtp_server.host,
            port=smtp_server.port,
            from_address="digest@papers.example.org",
        ),
        web=WebConfig(base_url="https://papers.example.org", secret_key_file=key),
        sources=[SourceConfig(name="arxiv", kind="arxiv-rss", url=feed.as_uri())],
    )
    report = run(cfg, store, now=NOW)
    assert report.count("sent") == 2, report.results
    return [m.data for m in smtp_server.received]


@pytest.mark.shared_data
def test_the_real_digest_passes_the_header_check(
    delivered: list[bytes], smtp_server: SmtpServer
) -> None:
    assert sorted(r for m in smtp_server.received for r in m.rcpt_tos) == [
        "trick@example.org",
        "zoe@example.org",
    ]
    for raw in delivered:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for header in ONCE:
            assert len(msg.get_all(header) or []) == 1, header
        assert "bcc" not in {k.lower() for k in msg}
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert str(msg["List-Unsubscribe"]).startswith("<https://papers.example.org/u/")
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        assert raw.isascii()  # non-ASCII names and subjects go out RFC 2047-encoded
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    names = {str(email.message_from_bytes(r, policy=email.policy.default)["To"]) for r in delivered}
    assert any("Zoë Ünïcode" in n for n in names)


@pytest.mark.shared_data
def test_the_hostile_item_is_inert_text_in_both_parts(delivered: list[bytes]) -> None:
    for raw in delivered:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Attention Bcc: x@y" in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "μ-maths" in text and "1&lt;p&lt;2" in html
        parser = _Elements()
        parser.feed(html)
        tags = {tag for tag, _ in parser.tags}
        assert not tags & {"script", "img", "form", "input", "iframe"}
        for _tag, attrs in parser.tags:
            for name, value in attrs:
                assert not name.startswith("on"), name
                if name in ("href", "src", "action"):
                    assert value is not None and value.startswith("https://"), value


@pytest.mark.shared_data
@pytest.mark.parametrize("width", [375, 1024])
def test_the_real_digest_in_chromium(delivered: list[bytes], tmp_path: Path, width: int) -> None:
    msg = email.message_from_bytes(delivered[0], policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    result = measure(html, width, tmp_path, f"real-digest-{width}px.png")
    assert result["width"] == width and result["scrollWidth"] <= width
    assert len(result["titles"]) == len(re.findall(r"<h2", html)) >= 2
    for t in result["titles"]:
        assert t["visible"] and t["height"] > 0 and t["left"] >= 0 and t["right"] <= width, t
