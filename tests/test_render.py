from __future__ import annotations

import email
import email.policy
from datetime import date

import pytest

from digest.config import Config
from digest.models import Paper
from digest.profiles import Profile
from digest.rank import Pick
from digest.render import build_message, environment, header_text, message_id_for, render_digest
from tests.conftest import NOW

HOSTILE = Paper(
    id="2611.99999",
    title='<script>alert("t")</script> Attention \r\nBcc: x@y =?UTF-8?Q?=0A?=Bcc: x@y',
    abstract='<img src=x onerror=alert(1)> <form action="https://evil"><input></form> '
    '<a href="javascript:alert(2)">click</a> and maths $1<p<2$',
    authors=["Eve <eve@evil>", "Mallory"],
    categories=["cs.CR"],
    announced=date(2026, 11, 20),
    abs_url="javascript:alert(3)",
    pdf_url="https://arxiv.org/pdf/2611.99999v1",
)


def build(workspace: Config, name: str = "Ada", paper: Paper = HOSTILE) -> bytes:
    # model_construct skips the profile checks: this tests the message builder's own defence.
    profile = Profile.model_construct(email="ada@example.org", name=name)
    rendered = render_digest(
        environment(workspace),
        workspace,
        profile,
        [Pick(paper, 1.0, "matches: attention")],
        date(2026, 11, 23),
    )
    msg = build_message(
        workspace,
        profile,
        rendered,
        message_id_for("ada@example.org", date(2026, 11, 23), "digest@papers.example.org"),
        NOW,
    )
    return msg.as_bytes()


def test_the_message_has_the_standard_headers_once(workspace: Config) -> None:
    msg = email.message_from_bytes(build(workspace), policy=email.policy.default)
    for header in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "MIME-Version",
    ):
        assert len(msg.get_all(header) or []) == 1, header
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["List-Unsubscribe"].startswith("<https://papers.example.org/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("name", ["Ada\r\nBcc: x@y", "=?UTF-8?Q?=0A?=Bcc: x@y", "Zoë Ünïcode"])
def test_no_name_or_title_can_add_a_header(workspace: Config, name: str) -> None:
    raw = build(workspace, name=name)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    names = sorted(k.lower() for k in msg)
    assert "bcc" not in names
    assert names == sorted(
        [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "list-id",
            "auto-submitted",
            "mime-version",
            "content-type",
        ]
    )
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_hostile_feed_content_is_inert_in_both_parts(workspace: Config) -> None:
    msg = email.message_from_bytes(build(workspace), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for tag in ("<script", "<img", "<form", "<input", 'href="javascript:'):
        assert tag not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert (
        "javascript:" not in html.split("<body", 1)[1].split("Abstract")[0]
        or 'href="javascript' not in html
    )
    assert "$1&lt;p&lt;2$" in html and "$1<p<2$" in text
    # The javascript: link was dropped, the https PDF link kept.
    assert "https://arxiv.org/pdf/2611.99999v1" in html


def test_header_text_flattens_controls() -> None:
    assert header_text("a\r\nBcc: b\tc") == "a Bcc: b c"


def test_the_message_id_is_fixed_per_subscriber_and_day() -> None:
    a = message_id_for("Ada@Example.org", date(2026, 11, 23), "d@papers.example.org")
    assert a == message_id_for("ada@example.org", date(2026, 11, 23), "d@papers.example.org")
    assert a != message_id_for("ada@example.org", date(2026, 11, 24), "d@papers.example.org")
    assert a.endswith("@papers.example.org>")
