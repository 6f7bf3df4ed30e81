from __future__ import annotations

import email
import email.policy
import re
from datetime import date
from email.parser import BytesHeaderParser
from html.parser import HTMLParser
from pathlib import Path

import pytest

from digest.config import Config
from digest.mail.compose import compose, header_names
from digest.mail.render import (
    Rendered,
    environment,
    header_text,
    message_id_for,
    render_digest,
)
from digest.profiles import Profile
from digest.rank import Pick
from digest.store import Store
from digest.store.schema import Paper
from tests.conftest import NOW, SmtpServer, bodies

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


def build(
    workspace: Config,
    name: str = "Ada",
    paper: Paper = HOSTILE,
    picks: list[Pick] | None = None,
) -> bytes:
    # model_construct skips the profile checks: this tests the message builder's own defence.
    profile = Profile.model_construct(email="ada@example.org", name=name)
    rendered = render_digest(
        environment(workspace),
        workspace,
        profile,
        picks or [Pick(paper, 1.0, "matches: attention")],
        date(2026, 11, 23),
    )
    return compose(  # the bytes that leave, header check included
        workspace,
        profile,
        rendered,
        message_id_for("ada@example.org", date(2026, 11, 23), "digest@papers.example.org", "k"),
        NOW,
    )


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


@pytest.mark.parametrize(
    "head",
    [
        b"From: a@b\nTo: c@d\r\n\r\n",  # a bare LF
        b"From: a@b\rBcc: x@y\r\n\r\n",  # a bare CR
        b"From: a@b\r\n\r\nBcc: x@y\r\n\r\n",  # an empty line: the rest is body
        b" continued: x\r\nFrom: a@b\r\n\r\n",  # a continuation of nothing
        b"From: a@b\r\n   \r\nTo: c@d\r\n\r\n",  # a line of blanks
        b"From a@b\r\n\r\n",  # no colon
        b"Fr om: a@b\r\n\r\n",  # a space in the name
        b"From: Zo\xc3\xab <a@b>\r\n\r\n",  # raw UTF-8
        b"From: a@b\x00\r\n\r\n",
        b"From: a@b\r\n",  # no empty line after the block
    ],
)
def test_a_header_block_that_is_not_plain_rfc_5322_fields_is_refused(head: bytes) -> None:
    assert header_names(head) is None


def test_header_names_agree_with_the_email_parser_on_every_composed_message(
    workspace: Config,
) -> None:
    names = [
        "Ada Lovelace",
        "Zoë Ünïcode",
        "=?UTF-8?Q?=0A?=Bcc: x@y",
        "Ada\r\nBcc: x@y",
        "a" * 300,
        'O\'Brien, "Quoted" (Comment) <x@y>',
        "名前 " * 40,
    ]
    for name in names:
        raw = build(workspace, name=name)
        head = raw[: raw.index(b"\r\n\r\n") + 4]
        parsed = BytesHeaderParser(policy=email.policy.SMTP).parsebytes(head)
        assert header_names(head) == [k.lower() for k in parsed], name


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def test_hostile_feed_content_is_inert_in_both_parts(workspace: Config) -> None:
    msg = email.message_from_bytes(build(workspace), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    parser = _Elements()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert not tags & {"script", "img", "form", "input", "iframe", "object", "embed"}
    for _tag, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on"), name
            if name in ("href", "src", "action"):
                assert value is not None and value.startswith("https://"), value
    # The feed's markup is shown as text.
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>" in text
    # LaTeX maths reads as text in both parts, its < kept (escaped in the HTML).
    assert "1&lt;p&lt;2" in html and "1<p<2" in text
    # The javascript: link was dropped, the https PDF link kept.
    assert "https://arxiv.org/pdf/2611.99999v1" in html


def test_a_short_ascii_header_is_written_byte_for_byte_as_the_email_library_would() -> None:
    import random
    import string
    from email.headerregistry import Address

    from digest.mail.compose import _folded, _folded_by_library, _plain

    rng = random.Random(14)
    alphabets = [string.ascii_letters + " ", string.printable[:95], "ab .,'-\"()<>@:;\\[]=?"]
    plain = 0
    for _ in range(20_000):
        text = header_text(
            "".join(rng.choice(rng.choice(alphabets)) for _ in range(rng.randint(0, 40)))
        )
        local = "".join(rng.choice(string.ascii_lowercase + ".+_-") for _ in range(8)).strip(".")
        for name, value in (
            ("To", str(Address(text, local or "a", "example.org"))),
            ("Subject", text),
        ):
            plain += _plain(name, value)
            assert _folded(name, value) == _folded_by_library(name, value), (name, value)
    assert plain > 10_000  # most took the short path, so the comparison means something


def test_the_fast_word_wrap_breaks_lines_exactly_where_jinja_and_textwrap_do() -> None:
    import random

    import jinja2
    from jinja2.filters import do_wordwrap

    from digest.mail.render import _wrapped

    env = jinja2.Environment()
    rng = random.Random(5)
    words = [
        "a",
        "of",
        "the",
        "attention",
        "long-context",
        "state-of-the-art",
        "·",
        "“quoted”",
        "x" * 75,
        "G\u00fcnther",
        "",
        " ",
    ]
    for _ in range(20_000):
        text = "".join(
            rng.choice(words) + rng.choice([" ", "  ", " ", "\t", ""]) for _ in range(30)
        )
        text = text[: rng.randint(0, len(text))]
        width = rng.choice([10, 40, 70, 75, 78])
        for wrapstring, hyphens in (("\n", False), ("\n        ", False), ("\n", True)):
            want = do_wordwrap(env, text, width, False, wrapstring, hyphens)
            assert _wrapped(text, width, False, wrapstring, hyphens) == want, (text, width)


def test_header_text_flattens_controls() -> None:
    assert header_text("a\r\nBcc: b\tc") == "a Bcc: b c"


def test_the_message_id_is_fixed_per_subscriber_and_day() -> None:
    def mid(email: str, day: date, key: str = "key-one") -> str:
        return message_id_for(email, day, "d@papers.example.org", key)

    a = mid("Ada@Example.org", date(2026, 11, 23))
    assert a == mid("ada@example.org", date(2026, 11, 23))
    assert a != mid("ada@example.org", date(2026, 11, 24))
    assert a.endswith("@papers.example.org>")


def test_the_message_id_gives_no_way_to_confirm_a_guessed_address() -> None:
    """Keyed: under another site's key the same reader and day get another id, and it is not
    the plain hash of the address anyone could compute."""
    import hashlib

    day = date(2026, 11, 23)
    one = message_id_for("ada@example.org", day, "d@papers.example.org", "key-one")
    other = message_id_for("ada@example.org", day, "d@papers.example.org", "key-two")
    assert one != other
    plain = hashlib.sha256(f"ada@example.org|{day.isoformat()}".encode()).hexdigest()[:20]
    assert plain not in one and "ada" not in one


def _parts(raw: bytes) -> tuple[str, str]:
    text, html = bodies(raw)
    return html, text


def test_latex_reads_as_text_in_both_parts(workspace: Config) -> None:
    paper = HOSTILE.model_copy(
        update={
            "title": r"$\mu$-Parametrization for 50% of $\alpha$-Stable Laws",
            "abstract": r"We bound $\zeta(s)$ by $O(n^2)$ for Schr\"odinger operators.",
        }
    )
    html, text = _parts(build(workspace, paper=paper))
    for part in (html, text):
        assert "μ-Parametrization for 50% of α-Stable Laws" in part
        assert "We bound ζ(s) by O(n²) for Schrödinger operators." in part
        assert "$" not in part.split("Why", 1)[0].split("Hello", 1)[1]


def test_spaces_inside_maths_stay_where_the_author_put_them(workspace: Config) -> None:
    """A control word eats the spaces after it in LaTeX's text mode; in maths TeX spaces by
    itself, so the source's spaces are all a plain reading has."""
    paper = HOSTILE.model_copy(
        update={"title": r"Sorting in $O(n \log n)$ when $\alpha < \beta$ and $a \leq b$"}
    )
    html, text = _parts(build(workspace, paper=paper))
    assert "Sorting in O(n log n) when α < β and a ≤ b" in text
    assert "Sorting in O(n log n) when α &lt; β and a ≤ b" in html  # escaped, as it must be


ACCENTED = HOSTILE.model_copy(
    update={
        "title": r"Schr\"odinger bridges for $\alpha$-stable laws — “in context”",
        "authors": ['Martin G\\"unther', "Zoë Ünïcode", "李 雷"],
    }
)


class _Document(HTMLParser):
    """Every tag with its attributes, and all text and CSS, as a browser's parser reads them
    (character references resolved where HTML resolves them, and not in <style>)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.seen: list[object] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.seen.append(("/", tag))

    def handle_data(self, data: str) -> None:
        self.seen.append(data)

    @classmethod
    def of(cls, page: str) -> list[object]:
        parser = cls()
        parser.feed(page)
        parser.close()
        return parser.seen


def _html_part(raw: bytes) -> tuple[str, bytes]:
    """The HTML part's Content-Transfer-Encoding and its bytes exactly as they left."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(("html",))
    assert part is not None
    payload = part.get_payload()
    assert isinstance(payload, str)
    return str(part["Content-Transfer-Encoding"]), payload.encode("ascii")


def test_the_html_leaves_as_7bit_ascii_that_a_browser_reads_as_the_rendered_page(
    workspace: Config,
) -> None:
    profile = Profile.model_construct(email="ada@example.org", name="Zoë")
    picks = [Pick(ACCENTED, 1.0, "close to “Über alles” (you liked)")]
    rendered = render_digest(environment(workspace), workspace, profile, picks, date(2026, 11, 23))
    assert not rendered.html.isascii()  # accents, CJK, TeX, curly quotes, a dash
    raw = compose(workspace, profile, rendered, "<m@papers.example.org>", NOW)
    encoding, sent = _html_part(raw)
    assert encoding == "7bit"
    assert sent.isascii() and b"=3D" not in sent
    lines = sent.split(b"\r\n")
    assert max(map(len, lines)) <= 998 and b"\n" not in sent.replace(b"\r\n", b"")
    # What an HTML parser builds from it (text, CSS, attributes) is exactly what it builds from
    # the page that was rendered (the line end before the boundary belongs to the boundary).
    assert _Document.of(sent.decode().replace("\r\n", "\n")) == _Document.of(
        rendered.html.rstrip("\n")
    )
    _, shown = bodies(raw)
    assert "Martin Günther" in shown and "Zoë Ünïcode" in shown and "李 雷" in shown


@pytest.mark.parametrize(
    "page",
    [
        # CSS knows no character references: a non-ASCII character in it must arrive as is.
        '<html><head><style>p::before { content: "→"; }</style></head><body><p>é</p></body></html>',
        # A style element left open: the rest of the document is CSS.
        "<html><head><style>p { color: red; }</head><body><p>é</p></body></html>",
        '<html><body><p>é</p><script>var s = "→";</script></body></html>',
        # A C1 control: as a reference HTML reads it as a Windows-1252 character.
        "<html><body><p>price \x80 5</p></body></html>",
        # A line longer than older relays pass whole.
        "<html><body><p>" + "é" * 150 + "</p></body></html>",
        "<html><body><p>" + "x" * 1000 + "</p></body></html>",
    ],
)
def test_html_that_7bit_ascii_would_change_leaves_as_quoted_printable(
    workspace: Config, page: str
) -> None:
    profile = Profile.model_construct(email="ada@example.org", name="Ada")
    rendered = Rendered(subject="Your digest", text="Hello\n", html=page)
    raw = compose(workspace, profile, rendered, "<m@papers.example.org>", NOW)
    encoding, sent = _html_part(raw)
    assert encoding == "quoted-printable"
    assert max(map(len, sent.split(b"\r\n"))) <= 76
    _, shown = bodies(raw)
    assert shown.rstrip("\n") == page


@pytest.mark.parametrize(
    "text, html",
    [
        ("bare LF\nbare CR\rCRLF\r\nCR LF apart\r\r\n", "<p>a\rb\nc\r\nd</p>"),
        ("\r\n\r\n", "<p>é\r</p><style>p{}</style>\n"),  # the HTML as quoted-printable
        ("no line end at all", "<p>" + "é" * 150 + "\r</p>"),
    ],
)
def test_every_composed_message_has_crlf_line_ends_only(
    workspace: Config, text: str, html: str
) -> None:
    """The planner stores each message as it goes after DATA, trusting compose's line ends
    (digest.store.packing): a bare CR or LF from a feed or profile must never reach them."""
    profile = Profile.model_construct(email="ada@example.org", name="Ada\r\nBcc: x@y\rz\n")
    for raw in (
        compose(workspace, profile, Rendered("Digest", text, html), "<m@x.org>", NOW),
        build(workspace, name="Ada\rB\nC"),
    ):
        assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r"), raw[:200]


def test_the_html_has_its_css_inlined_and_keeps_dark_mode_rules(workspace: Config) -> None:
    html, _ = _parts(build(workspace))
    assert re.search(r'<h1 style="margin: 0;', html)
    assert re.search(r'class="card"[^>]*style="[^"]*max-width: 640px', html)
    assert "prefers-color-scheme: dark" in html


def test_a_long_digest_drops_abstracts_then_papers_to_stay_under_gmail_clipping(
    workspace: Config,
) -> None:
    long_abstract = "word " * 2000
    picks = [
        Pick(
            HOSTILE.model_copy(
                update={
                    "id": f"2611.{i:05d}",
                    "title": f"Paper {i} " + "x" * 180,
                    "abstract": long_abstract,
                }
            ),
            1.0,
            "matches: " + ", ".join(f"term{j}" for j in range(30)),
        )
        for i in range(50)
    ]
    raw = build(workspace, picks=picks)
    assert len(raw) < 100_000
    html, text = _parts(raw)
    assert "word word" not in html and "word word" not in text  # abstracts went first
    assert "Paper 0" in html and "Paper 0" in text  # the top papers stay
    assert "Paper 49" not in html and "Paper 49" not in text  # the last ones went


def test_the_text_part_wraps_at_78_columns_except_links(workspace: Config) -> None:
    paper = HOSTILE.model_copy(
        update={"title": "A " + "long title " * 20, "abstract": "Sentence. " * 60}
    )
    _, text = _parts(build(workspace, paper=paper))
    long_lines = [line for line in text.splitlines() if len(line) > 78]
    assert long_lines and all("https://" in line for line in long_lines)


def _dkim_key(tmp: Path) -> tuple[Path, bytes]:
    """A throwaway RSA key and the DNS TXT record that publishes it."""
    import base64
    import subprocess

    key = tmp / "dkim.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_dkim_signs_the_sent_bytes_including_one_click_unsubscribe(
    workspace: Config, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    import dkim

    from digest.service.pipeline import run

    key, record = _dkim_key(tmp_path)
    smtp = workspace.smtp.model_copy(update={"dkim_selector": "d1", "dkim_key_file": key})
    cfg = workspace.model_copy(update={"smtp": smtp})
    run(cfg, store, now=NOW)
    assert smtp_server.received

    def dns(name: bytes, timeout: int = 5) -> bytes:
        # The network boundary: the one DNS answer a verifier would fetch.
        assert name == b"d1._domainkey.papers.example.org."
        return record

    for m in smtp_server.received:
        assert m.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(m.data, dnsfunc=dns)
        signed = email.message_from_bytes(m.data)["DKIM-Signature"].replace("\r\n", "")
        tags = dict(t.strip().split("=", 1) for t in signed.split(";") if "=" in t)
        covered = {h.strip().lower() for h in tags["h"].split(":")}
        assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= covered
        forged = m.data.replace(
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"
        )
        assert not dkim.verify(forged, dnsfunc=dns)


def test_links_are_https_to_known_hosts_only() -> None:
    from digest.mail.render import safe_link

    assert safe_link("https://arxiv.org/abs/2611.00001") == "https://arxiv.org/abs/2611.00001"
    assert safe_link("http://arxiv.org/pdf/2611.00001v2") == "https://arxiv.org/pdf/2611.00001v2"
    assert safe_link("https://export.arxiv.org/abs/1") == "https://export.arxiv.org/abs/1"
    for bad in (
        "https://evil.example/arxiv.org",
        "https://arxiv.org.evil.example/x",
        "https://user@arxiv.org/x",
        "https://arxiv.org:8443/x",
        "https://arxiv.org:abc/x",
        "javascript:alert(1)",
        "data:text/html,x",
        'https://arxiv.org/x"onmouseover=1',
    ):
        assert safe_link(bad) is None, bad
    assert safe_link("https://blog.example.org/p", ("example.org",)) == "https://blog.example.org/p"


def test_a_paper_without_authors_leaves_no_blank_author_line_in_the_text_part(
    workspace: Config,
) -> None:
    """A feed item with no authors: no line of spaces where they would be (it went out
    quoted-printable as `   =20`)."""
    raw = build(workspace, paper=HOSTILE.model_copy(update={"authors": []}))
    assert b"=20\r\n" not in raw.split(b"text/plain", 1)[1].split(b"text/html", 1)[0]
    text, _ = bodies(raw)
    title_at = next(i for i, ln in enumerate(text.splitlines()) if "Attention" in ln)
    after = text.splitlines()[title_at + 1]
    assert after.strip(), repr(after)  # the next line says something (categories, why)


def test_the_readers_address_is_only_in_the_envelope_headers_not_in_what_is_forwarded(
    workspace: Config,
) -> None:
    """The footer names the reader as `a…@example.org`: a forwarded digest, or its web view
    shared, does not give the whole address to whoever reads it."""
    raw = build(workspace, paper=ACCENTED)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"ada@example.org" in head and b"ada@example.org" not in body
    text, html = bodies(raw)
    assert "because a…@example.org is subscribed" in text
    assert "because a…@example.org is subscribed" in " ".join(html.split())
