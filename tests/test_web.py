"""The email's links against a real `digest.service.web` server (uvicorn on a local port).

Links in the messages point at the public base_url; the tests send them to the local server
instead, as a reverse proxy would.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from digest.config import Config, WebConfig
from digest.mail.links import (
    BadToken,
    Signer,
    read_unsubscribe,
    subscriber_ref,
    unsubscribe_token,
)
from digest.profiles import load_profile
from digest.service.context import prepare, prepare_models
from digest.service.demo import free_port
from digest.service.picking import rank_pool
from digest.service.pipeline import run
from digest.service.web import create_app
from digest.store import Store
from digest.store.schema import Paper
from tests.conftest import NOW, SmtpServer, digest

PUBLIC = "https://papers.example.org"


class WebServer:
    def __init__(self, cfg: Config, store: Store) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(cfg, store), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "web server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(timeout=10)

    def local(self, url: str) -> str:
        assert url.startswith(PUBLIC + "/"), url
        return f"http://127.0.0.1:{self.port}" + url[len(PUBLIC) :]

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def web(workspace: Config, store: Store) -> Iterator[WebServer]:
    server = WebServer(workspace, store)
    yield server
    server.close()


def delivered(smtp_server: SmtpServer, rcpt: str) -> email.message.EmailMessage:
    data = next(m.data for m in smtp_server.received if m.rcpt_tos == [rcpt])
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def text_links(msg: email.message.EmailMessage, label: str) -> list[str]:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return re.findall(rf"{re.escape(label)}: (\S+)", part.get_content())


def test_one_click_unsubscribe_from_the_delivered_header(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    msg = delivered(smtp_server, "ada@example.org")
    url = web.local(str(msg["List-Unsubscribe"]).strip("<>"))
    # A link scanner's GET changes nothing.
    page = web.client.get(url)
    assert page.status_code == 200 and "Unsubscribe?" in page.text
    assert not store.is_unsubscribed("ada@example.org")
    # RFC 8058: a POST with this body and no cookie unsubscribes.
    done = web.client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert store.is_unsubscribed("ada@example.org")
    again = web.client.post(url, content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200  # idempotent
    smtp_server.received.clear()
    nxt = run(workspace, store, now=NOW + timedelta(days=1))
    assert [r.status for r in nxt.results if r.email == "ada@example.org"] == ["unsubscribed"]
    assert all(m.rcpt_tos != ["ada@example.org"] for m in smtp_server.received)
    # The page offers to undo it.
    back = web.client.post(url, data={"action": "resubscribe"})
    assert back.status_code == 200 and not store.is_unsubscribed("ada@example.org")


def test_forged_truncated_and_cross_purpose_tokens_get_the_same_plain_refusal(
    workspace: Config, web: WebServer
) -> None:
    token = unsubscribe_token(workspace, "ada@example.org")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    answers = [
        web.client.get(f"http://127.0.0.1:{web.port}/u/{flipped}"),
        web.client.post(f"http://127.0.0.1:{web.port}/u/{token[:-6]}"),
        web.client.get(f"http://127.0.0.1:{web.port}/f/{token}"),
        web.client.get(f"http://127.0.0.1:{web.port}/d/{token}"),
    ]
    assert {a.status_code for a in answers} == {400}
    assert len({a.text for a in answers}) == 1
    assert "ada" not in answers[0].text
    assert answers[0].headers["content-security-policy"].startswith("default-src 'none'")


def test_rotated_keys_keep_old_links_working(workspace: Config, tmp_path: Path) -> None:
    old = unsubscribe_token(workspace, "ada@example.org")
    key = tmp_path / "rotated"
    key.write_text("new-key\ntest-secret-key\n")
    rotated = workspace.model_copy(update={"web": WebConfig(base_url=PUBLIC, secret_key_file=key)})
    assert read_unsubscribe(rotated, old) == subscriber_ref("test-secret-key", "ada@example.org")
    assert unsubscribe_token(rotated, "ada@example.org") != old
    key.write_text("new-key\n")
    with pytest.raises(BadToken):
        read_unsubscribe(rotated, old)


def test_less_like_this_from_the_email_pushes_that_papers_twin_down(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    msg = delivered(smtp_server, "ada@example.org")
    less = text_links(msg, "Less like this")
    assert less and len(less) == len(text_links(msg, "More like this"))
    (sent,) = [d for d in store.deliveries() if d.subscriber == "ada@example.org"]
    profile = load_profile(workspace.subscribers_dir / "ada.toml")

    disliked_id = ""

    def ranking(day: int) -> tuple[list[str], dict[str, float]]:
        ctx = prepare(workspace, store, NOW + timedelta(days=day))
        prepare_models(ctx, [profile])
        model = ctx.models[profile.email]
        share = model.calibrate(ctx.scores[profile.email])
        shares = {p.id: float(v) for p, v in zip(ctx.listing, share, strict=True)}
        pool = [p for p in ctx.listing if p.id != disliked_id]
        return [p.paper.id for p in rank_pool(ctx, profile, pool, complete=True)], shares

    # The paper the model itself liked best (not one pinned by a followed author).
    _, shares = ranking(0)
    index, disliked_id = max(
        ((i, pid) for i, pid in enumerate(sent.paper_ids) if "author:" not in sent.reasons[pid]),
        key=lambda item: shares[item[1]],
    )
    url = web.local(less[index])
    page = web.client.get(url)
    assert page.status_code == 200 and "Less like this?" in page.text
    assert store.feedback("ada@example.org") == {}
    # A near-duplicate of it arrives the next day (the original itself was sent already).
    original = store.papers([disliked_id])[disliked_id]
    twin = Paper(
        id="2611.99999",
        title=original.title,
        abstract=original.abstract,
        authors=original.authors,
        categories=original.categories,
        announced=original.announced + timedelta(days=1),
        announce_type="new",
        sources=original.sources,
    )
    with store.session() as s:
        s.add(twin)
        s.commit()
    order, shares = ranking(1)
    before, share_before = order.index(twin.id), shares[twin.id]
    posted = web.client.post(url)
    assert posted.status_code == 200 and "Thank you" in posted.text
    assert store.feedback("ada@example.org") == {disliked_id: "dislike"}
    order, shares = ranking(1)
    assert shares[twin.id] < share_before - 0.1
    assert order.index(twin.id) > before


def test_the_digest_as_a_web_page(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    msg = delivered(smtp_server, "bob@example.org")
    (view,) = text_links(msg, "View in a browser")
    page = web.client.get(web.local(view))
    assert page.status_code == 200
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None and page.text == html_part.get_content()
    assert "script-src" not in page.headers["content-security-policy"]


# -- `digest web` as an operator starts it -----------------------------------------------------


def test_digest_web_on_a_port_in_use_says_so_in_one_line(site: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        ran = digest("web", "--port", str(port), cwd=site)
    finally:
        taken.close()
    assert ran.returncode == 1
    assert "serving" not in ran.stdout and "Traceback" not in ran.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in ran.stderr.splitlines()[0]


def test_digest_web_refuses_a_port_out_of_range_in_one_line(site: Path) -> None:
    ran = digest("web", "--port", "99999", cwd=site)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert "99999 is not in the range 1<=x<=65535" in ran.stderr


def test_digest_web_logs_one_line_per_request_without_the_token(site: Path) -> None:
    from digest.config import load_config

    cfg = load_config(site / "digest.toml")
    signer = Signer(cfg)
    token = signer.unsubscribe("ada@example.org")
    store = Store(cfg.database_url)
    store.upgrade()
    store.remember_ref(signer.ref("ada@example.org"), "ada@example.org")  # as a run does
    store.dispose()
    port = free_port()
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DIGEST_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "web", "--port", str(port)],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/u/{token}", timeout=5).status_code == 200
        assert httpx.get(f"{base}/f/forged", timeout=5).status_code == 400
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    lines = [ln for ln in err.splitlines() if "digest.web.access" in ln]
    assert any(re.search(r"method=GET path=/u/… status=200 ms=\d+$", ln) for ln in lines), err
    assert any(re.search(r"method=GET path=/f/… status=400 ms=\d+$", ln) for ln in lines), err
    assert any("method=GET path=/healthz status=200" in ln for ln in lines), err
    assert token not in err and "forged" not in err


def test_links_work_under_the_base_urls_path_and_a_logged_path_never_holds_a_token(
    workspace: Config, store: Store
) -> None:
    from digest.service.web import shown_path

    cfg = workspace.model_copy(
        update={"web": workspace.web.model_copy(update={"base_url": PUBLIC + "/lab/digest"})}
    )
    signer = Signer(cfg)
    store.remember_ref(signer.ref("ada@example.org"), "ada@example.org")
    token = signer.unsubscribe("ada@example.org")
    server = WebServer(cfg, store)
    try:
        base = f"http://127.0.0.1:{server.port}"
        # As the link reads (a proxy passing the path on), and with the path stripped.
        assert server.client.get(f"{base}/lab/digest/u/{token}").status_code == 200
        assert server.client.get(f"{base}/u/{token}").status_code == 200
    finally:
        server.close()
    assert shown_path(f"/elsewhere/u/{token}") == "/elsewhere/u/…"
    assert shown_path(f"/lab/digest/d/{token}?x=1") == "/lab/digest/d/…?x=1"
