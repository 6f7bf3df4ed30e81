"""The links in a delivered digest name the reader by an opaque ref, never by address; links
in digests sent before refs existed keep working."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from digest.config import Config
from digest.mail.links import SALTS
from digest.service.pipeline import preview, run
from digest.store import Store
from tests.conftest import NOW, SmtpServer, digest
from tests.test_web import WebServer

TOKEN = re.compile(r"/(u|f|d)/([A-Za-z0-9_\-.]+)")


def payload(token: str) -> str:
    """What anybody can read out of a token without the key: its base64 (maybe zlib) part."""
    compressed = token.startswith(".")
    body = token.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


def old_token(cfg: Config, purpose: str, value: object) -> str:
    """A link as digests sent before refs carried it: the address in the payload."""
    keys = [k for k in cfg.web.secret_key().get_secret_value().splitlines() if k]
    return str(URLSafeSerializer(list(reversed(keys)), salt=SALTS[purpose]).dumps(value))


def unsubscribe_link(raw: bytes) -> str:
    """The token of the raw `List-Unsubscribe:` header line, as the relay got it."""
    header = re.search(rb"^List-Unsubscribe: <[^>]*/u/([^>]+)>", raw, flags=re.M)
    assert header is not None
    return header.group(1).decode()


def sent_to(smtp_server: SmtpServer, rcpt: str) -> bytes:
    return next(m.data for m in smtp_server.received if m.rcpt_tos == [rcpt])


@pytest.fixture
def web(workspace: Config, store: Store) -> Iterator[WebServer]:
    server = WebServer(workspace, store)
    yield server
    server.close()


def test_no_link_in_a_delivered_digest_or_its_web_page_reveals_the_readers_address(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    raw = sent_to(smtp_server, "ada@example.org")
    # The bytes as they left: the header, and both parts (quoted-printable undone).
    import quopri

    text = quopri.decodestring(raw).decode("utf-8", "replace")
    tokens = {t for _, t in TOKEN.findall(text)}
    assert len(tokens) >= 5  # unsubscribe, the web view, more/less per paper
    for token in tokens:
        readable = payload(token)
        assert "@" not in readable and "ada" not in readable.lower(), readable
    view = next(t for kind, t in TOKEN.findall(text) if kind == "d")
    page = web.client.get(f"http://127.0.0.1:{web.port}/d/{view}")
    assert page.status_code == 200
    for _, token in TOKEN.findall(page.text):
        assert "@" not in payload(token)


def test_the_unsubscribe_page_shows_the_address_only_in_part(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    token = unsubscribe_link(sent_to(smtp_server, "ada@example.org"))
    page = web.client.get(f"http://127.0.0.1:{web.port}/u/{token}")
    assert page.status_code == 200 and "a…@example.org" in page.text
    assert "ada@example.org" not in page.text


def test_links_from_digests_sent_before_refs_still_unsubscribe_rate_and_show_the_digest(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    day = NOW.date()
    (sent,) = [d for d in store.deliveries() if d.subscriber == "ada@example.org"]
    paper = sent.paper_ids[-1]
    base = f"http://127.0.0.1:{web.port}"
    view = web.client.get(
        f"{base}/d/{old_token(workspace, 'digest', ['ada@example.org', str(day)])}"
    )
    assert view.status_code == 200 and "<html" in view.text.lower()
    fb = old_token(workspace, "feedback", ["ada@example.org", paper, str(day), "dislike"])
    assert web.client.post(f"{base}/f/{fb}").status_code == 200
    assert store.feedback("ada@example.org") == {paper: "dislike"}
    unsub = old_token(workspace, "unsubscribe", "ada@example.org")
    done = web.client.post(f"{base}/u/{unsub}", content=b"List-Unsubscribe=One-Click")
    assert done.status_code == 200 and store.is_unsubscribed("ada@example.org")


def test_links_keep_working_after_the_key_is_rotated(
    workspace: Config, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    run(workspace, store, now=NOW)
    old = unsubscribe_link(sent_to(smtp_server, "bob@example.org"))
    key = workspace.web.secret_key_file
    assert key is not None
    key.write_text("a-new-signing-key\ntest-secret-key\n")  # new first, old still verifies
    # The digest rendered again (a preview) signs with the new key: another ref, also known.
    new = unsubscribe_link(preview(workspace, store, "bob@example.org", now=NOW).message)
    assert new != old
    server = WebServer(workspace, store)
    try:
        for token in (old, new):
            store.set_unsubscribed("bob@example.org", False)
            url = f"http://127.0.0.1:{server.port}/u/{token}"
            done = server.client.post(url, content=b"List-Unsubscribe=One-Click")
            assert done.status_code == 200 and store.is_unsubscribed("bob@example.org")
    finally:
        server.close()


def test_a_database_made_before_refs_is_upgraded_to_have_their_table_and_keeps_its_rows(
    site: Path,
) -> None:
    assert digest("run", cwd=site).returncode == 0
    db = site / "data" / "digest.db"
    with sqlite3.connect(db) as conn:  # as the release before refs (and migrations) left it
        conn.execute("DROP TABLE linkref")
        conn.execute("DROP TABLE planclaim")  # later revisions' (0003, 0004, 0005)
        conn.execute("DROP TABLE plaintext")
        conn.execute("DROP INDEX ix_delivery_day_states")
        conn.execute("CREATE INDEX ix_delivery_digest_date ON delivery (digest_date)")
        conn.execute("DROP TABLE alembic_version")
        sent = conn.execute("SELECT count(*) FROM delivery WHERE state = 'sent'").fetchone()[0]
    assert sent == 2
    refused = digest("status", cwd=site)
    assert refused.returncode == 1 and "digest db upgrade" in refused.stderr
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "0001 -> 0005" in upgraded.stdout and "copied" in upgraded.stdout
    status = digest("status", cwd=site)
    assert status.returncode == 0, status.stderr
    assert "2 sent" in status.stdout
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "linkref" in tables


@pytest.mark.parametrize(
    "paper_id",
    ["2411.12345", "doi:10.48550/arXiv.2411.12345", "https://example.org/é/" + "x" * 300, 'ü"\\'],
)
def test_links_are_signed_as_itsdangerous_signs_them_and_read_back(
    workspace: Config, paper_id: str
) -> None:
    from datetime import date

    from digest.mail.links import Signer, read_feedback, read_unsubscribe

    workspace.web.secret_key_file.write_text("old-key-" + "a" * 40 + "\nnew-key-" + "b" * 40 + "\n")
    signer = Signer(workspace)
    keys = signer.keys
    email, day = "Reader@Example.org", date(2026, 12, 3)

    def theirs(purpose: str, value: object) -> str:
        """What itsdangerous makes, but for the payloads it would compress (a long paper id):
        ours are never compressed, and must read back the same."""
        serializer = URLSafeSerializer(keys, salt=SALTS[purpose])
        token = str(serializer.dumps(value))
        if token.startswith("."):
            assert serializer.loads(token) == value
            return str(
                serializer.make_signer()
                .sign(
                    base64.urlsafe_b64encode(
                        json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
                    ).rstrip(b"=")
                )
                .decode()
            )
        return token

    for other in ("someone@else.org", email):  # the remembered ref follows the reader
        ref = signer.ref(other)
    assert signer.unsubscribe(email) == theirs("unsubscribe", ref)
    token = signer.feedback(email, paper_id, day, "like")
    assert token == theirs("feedback", [ref, paper_id, day.isoformat(), "like"])
    assert signer.digest(email, day) == theirs("digest", [ref, day.isoformat()])
    assert read_feedback(workspace, token).paper_id == paper_id
    assert read_unsubscribe(workspace, signer.unsubscribe(email)) == ref
