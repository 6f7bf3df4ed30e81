"""The links in the email: unsubscribe, "more / less like this", the digest as a web page, and
the reader's digests as an Atom feed.

A small Starlette app, run by `digest web` (uvicorn). Every GET only shows a page with a
button, because mail scanners follow links. The change happens on POST. The unsubscribe POST also
answers RFC 8058 one-click requests (body `List-Unsubscribe=One-Click`, no cookie). A bad link
gets the same plain 400 page whatever was wrong with it, so the answer reveals nothing.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import time
from collections.abc import Callable
from datetime import date
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.config import Config
from digest.mail.links import (
    BadToken,
    is_address,
    read_digest,
    read_feed,
    read_feedback,
    read_unsubscribe,
)
from digest.service.feed import atom_feed, etag
from digest.store.failures import first_line
from digest.store.papers import Store
from digest.text import masked, plain_latex

access_log = logging.getLogger("digest.web.access")
log = logging.getLogger("digest.web")
# Forms here are a button and a hidden field or two; anything larger is not ours.
MAX_BODY = 4096
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The digest page shows our own rendered email: images and links to https hosts only.
DIGEST_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_TOKEN_SEGMENT = re.compile(r"(/[ufda]/)[^/?]+")
VERDICT_TEXT = {"like": "more like this", "dislike": "less like this"}


class Web:
    def __init__(self, cfg: Config, store: Store, env: jinja2.Environment) -> None:
        self.cfg = cfg
        self.store = store
        self.env = env

    def page(
        self,
        title: str,
        lines: list[str],
        button: str = "",
        fields: list[tuple[str, str]] | None = None,
        note: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        html = self.env.get_template("web_page.html").render(
            title=title, lines=lines, button=button, fields=fields or [], note=note
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def address(self, who: str) -> str | None:
        """The reader a link names: a ref looked up, or the address an old link carries."""
        return who.lower() if is_address(who) else self.store.ref_address(who)

    def gone(self) -> HTMLResponse:
        """A genuine link whose reader the database no longer knows (it was reset)."""
        return self.page(
            "Subscription not found",
            ["This address gets no digests from here any more."],
            status=404,
        )

    def bad_link(self) -> HTMLResponse:
        return self.page(
            "This link is not valid",
            ["Please use the link exactly as it appears in your digest email."],
            status=400,
        )

    async def form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_BODY:
            return {}
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        return {k: v[0] for k, v in parsed.items() if v}

    # -- /u/<token> ------------------------------------------------------------------------

    async def unsubscribe(self, request: Request) -> Response:
        try:
            who = read_unsubscribe(self.cfg, request.path_params["token"])
        except BadToken:
            return self.bad_link()
        address = await run_in_threadpool(self.address, who)
        if address is None:
            return self.gone()
        # The page names the address only in part: the link may be in a forwarded email.
        shown = masked(address)
        if request.method == "POST":
            form = await self.form(request)
            if form.get("action") == "resubscribe":
                await run_in_threadpool(self.store.set_unsubscribed, address, False)
                return self.page(
                    "You are subscribed again",
                    [f"{shown} will get the next digest as usual."],
                )
            await run_in_threadpool(self.store.set_unsubscribed, address, True)
            return self.unsubscribed(
                f"{shown} will get no more digests.",
                "Changed your mind? The button above undoes this.",
            )
        if await run_in_threadpool(self.store.is_unsubscribed, address):
            return self.unsubscribed(f"{shown} gets no digests.")
        return self.page(
            "Unsubscribe?",
            [f"Stop sending paper digests to {shown}?"],
            button="Unsubscribe",
            fields=[("List-Unsubscribe", "One-Click")],
            note="Nothing changes until you press the button.",
        )

    def unsubscribed(self, line: str, note: str = "") -> HTMLResponse:
        """The state page after unsubscribing, with the way back."""
        return self.page(
            "You are unsubscribed",
            [line],
            button="Subscribe again",
            fields=[("action", "resubscribe")],
            note=note,
        )

    # -- /f/<token> ------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        try:
            link = read_feedback(self.cfg, request.path_params["token"])
        except BadToken:
            return self.bad_link()
        address = await run_in_threadpool(self.address, link.who)
        if address is None:
            return self.gone()
        papers = await run_in_threadpool(self.store.papers, [link.paper_id])
        paper = papers.get(link.paper_id)
        if paper is None:
            return self.page("Paper not found", ["This paper is no longer stored."], status=404)
        what = VERDICT_TEXT[link.verdict]
        if request.method == "POST":
            await run_in_threadpool(self.store.set_feedback, address, link.paper_id, link.verdict)
            return self.page(
                "Thank you",
                [f"Noted: {what}.", plain_latex(paper.title)],
                note=(
                    "Your next digest is ranked with it."
                    if link.verdict == "like"
                    # The model learns from it; a paper matching the reader's own keywords or
                    # followed authors is still shown, as the profile asks.
                    else "Your next digest is ranked with it; papers matching your own "
                    "keywords or authors are still shown."
                ),
            )
        return self.page(
            f"{what.capitalize()}?",
            [plain_latex(paper.title), f"From your digest of {link.day:%d %B %Y}."],
            button=f"Yes, {what}",
            note="Nothing is recorded until you press the button.",
        )

    # -- /d/<token> ------------------------------------------------------------------------

    async def digest(self, request: Request) -> Response:
        try:
            who, day = read_digest(self.cfg, request.path_params["token"])
        except BadToken:
            return self.bad_link()
        address = await run_in_threadpool(self.address, who)
        html = None if address is None else await run_in_threadpool(self.digest_html, address, day)
        if html == "":
            days = self.cfg.digest.keep_days
            lines = [f"Digests are kept for {days} days; this one has expired."]
            return self.page("Digest expired", lines, status=410)
        if html is None:
            return self.page("Digest not found", ["This digest is no longer stored."], status=404)
        return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": DIGEST_CSP})

    def digest_html(self, address: str, day: date) -> str | None:
        """The HTML part of the very message that was sent (or is due) for that day; "" when
        the digest was sent but its message has been pruned (`[digest] keep_days`)."""
        delivery = self.store.delivery(address, day)
        if delivery is None or delivery.id is None:
            return None
        raw = self.store.message_bytes(delivery.id)
        if raw is None:
            return ""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
        return None if part is None else str(part.get_content())

    # -- /a/<token> ------------------------------------------------------------------------

    async def feed(self, request: Request) -> Response:
        """The reader's digests as an Atom feed. Feed readers poll: an unchanged feed is a 304
        to a request that names its ETag."""
        token = request.path_params["token"]
        try:
            who = read_feed(self.cfg, token)
        except BadToken:
            return self.bad_link()
        address = await run_in_threadpool(self.address, who)
        if address is None:
            return self.gone()
        self_url = f"{self.cfg.web.base_url}/a/{token}"
        body = await run_in_threadpool(atom_feed, self.cfg, self.store, address, who, self_url)
        tag = etag(body)
        headers = {**HEADERS, "ETag": tag, "Cache-Control": "private, max-age=900"}
        if tag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/atom+xml; charset=utf-8", headers=headers)

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok", headers=HEADERS)


def shown_path(path: str) -> str:
    """A request path fit for a log: a token is cut, since it stands for a reader (also
    under a path prefix, and in a path no route serves)."""
    path = _TOKEN_SEGMENT.sub(r"\1…", path)
    return path if len(path) <= 80 else path[:79] + "…"


class BodyLimit:
    """Refuses a request body over MAX_BODY with 413 before reading it (by its Content-Length),
    or as soon as a body without one passes the limit: a link's form is a few fields, and a
    large body would otherwise be read into memory whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            await _refuse(send, 413 if declared.isdigit() else 400)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > MAX_BODY:
                await _refuse(send, 413)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int) -> None:
    text = b"Request body too large" if status == 413 else b"Bad request"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


class AccessLog:
    """One line per request (method, path with the token cut, status, milliseconds), so an
    operator can see that the links are used, and no reader's token in the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access_log.info(
                "method=%s path=%s status=%d ms=%.0f",
                scope.get("method", "-"),
                shown_path(str(scope.get("path", ""))),
                status,
                1000 * (time.monotonic() - start),
            )


class Failsafe:
    """A handler that fails (the database locked past its wait, or gone) answers with the
    site's own page and a 503, and leaves one line in the log: no traceback reaches the
    reader, and none with a statement's values (a reader's address) reaches the log."""

    def __init__(self, app: ASGIApp, page: Callable[[], Response]) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.error(
                "request failed: path=%s %s: %s",
                shown_path(str(scope.get("path", ""))),
                type(exc).__name__,
                first_line(str(exc)),
            )
            log.debug("request failed", exc_info=True)  # `-v`: the traceback, for a bug
            if not started:  # else the reader's connection has half a page: nothing to add
                await self.page()(scope, receive, send)


def create_app(cfg: Config, store: Store) -> Starlette:
    from digest.mail.render import environment

    web = Web(cfg, store, environment(cfg))
    # The links live under base_url's path; a proxy may pass that path on or strip it.
    prefixes = dict.fromkeys(["", urlsplit(cfg.web.base_url).path.rstrip("/")])
    routes = [Route("/healthz", web.health, methods=["GET"])]
    for prefix in prefixes:
        routes += [
            Route(prefix + "/u/{token}", web.unsubscribe, methods=["GET", "POST"]),
            Route(prefix + "/f/{token}", web.feedback, methods=["GET", "POST"]),
            Route(prefix + "/d/{token}", web.digest, methods=["GET"]),
            Route(prefix + "/a/{token}", web.feed, methods=["GET"]),
        ]

    def busy() -> Response:
        # Every action behind a link can be repeated safely (feedback and unsubscribing set a
        # state), so the reader is simply asked to try again.
        lines = ["The service could not answer just now."]
        note = "Try the link again in a minute; doing it twice does no harm."
        return web.page("Please try again", lines, note=note, status=503)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(AccessLog), Middleware(Failsafe, page=busy), Middleware(BodyLimit)],
    )
    # A link with a slash added is not one of ours: Starlette would redirect it to the URL
    # built from the request's Host header, which a client sets (an open redirect).
    app.router.redirect_slashes = False
    return app
