"""Fetching a source's bytes: HTTP with conditional GET, or a local file.

`file://` URLs exist for offline use (the demo, tests, a listing saved by hand). Over HTTP the
other side is untrusted, so everything it controls is bounded:

- size: bytes are counted as decompression produces them, through any stack of encodings
  (`Content-Encoding: gzip, gzip`), so a small bomb stops at the cap, not after it has expanded;
- time: one deadline covers the whole fetch (connect, headers, body, retries): a server that
  trickles one byte a second cannot hold a source for longer than that;
- where: every redirect hop is resolved and its addresses checked; loopback, private,
  link-local and unspecified ones are refused unless the configured URL itself points at that
  address (a local mirror is the operator's choice, a redirect there is not). The connection then
  goes to the address that was checked, so a second DNS answer cannot swap it;
- manners: 429 and 503 are retried within the deadline, honouring Retry-After, and a host with
  a minimum interval (arXiv's API asks for 3 s between calls) is spaced.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlparse, urlsplit, urlunsplit

import httpx

from digest import __version__
from digest.errors import FeedError

USER_AGENT = f"digest/{__version__} (self-hosted research paper digest)"
MAX_REDIRECTS = 5
# 429/503 answers retried at most this often, and never past the fetch's deadline.
MAX_RETRIES = 3
# Output of one decompression step: the most a stage holds at a time.
PIECE = 64 * 1024
# More stacked encodings than this is not a real server.
MAX_ENCODINGS = 3
# Hosts whose terms ask for a pause between calls (arXiv API: "no more than one request every
# three seconds").
MIN_INTERVAL = {"export.arxiv.org": 3.0}

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Fetched:
    content: bytes | None  # None: not modified since the validators we sent
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None  # as the server said it (a proxy's error page is HTML)


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    deadline: float | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    params: dict[str, str] | None = None,
) -> Fetched:
    """The body at ``url``, or ``Fetched(None)`` when the server says it has not changed.

    ``timeout`` bounds each network step; ``deadline`` (seconds) the whole fetch.
    """
    if url.startswith("file://"):
        return _read_file(url, max_bytes)
    limit = deadline if deadline is not None else max(4 * timeout, 60.0)
    job = _Fetch(url, timeout, max_bytes, params)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified

    async def bounded() -> Fetched:
        async with asyncio.timeout(limit):
            return await job.run(headers, time.monotonic() + limit)

    try:
        return asyncio.run(bounded())
    except TimeoutError as exc:
        raise FeedError(f"{url}: no complete answer within {limit:g} s; stopped") from exc


# -- where a request may go ------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the network boundary; tests replace it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FeedError(f"{host}: cannot resolve: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _internal(address: str) -> str | None:
    """Why an address is not on the public internet, or None if it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None


class _Fetch:
    def __init__(
        self,
        url: str,
        timeout: float,
        max_bytes: int,
        params: dict[str, str] | None,
        resolver: Resolver | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.params = params
        self.resolver = resolver or resolve
        self.trusted: set[str] = set()

    async def addresses(self, url: str) -> tuple[str, list[str]]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FeedError(f"{self.url}: redirected to {url[:200]!r}, not an http(s) URL")
        # In a thread: a stalled DNS answer is then cut by the deadline like everything else.
        found = await asyncio.to_thread(self.resolver, parts.hostname, _port(parts))
        if not found:
            raise FeedError(f"{parts.hostname}: resolves to no address")
        return parts.hostname, found

    async def check(self, url: str) -> tuple[str, str]:
        """(host, the address to connect to) for one hop, or FeedError naming the hop."""
        host, found = await self.addresses(url)
        for address in found:
            why = _internal(address)
            if why and address not in self.trusted:
                raise FeedError(
                    f"{self.url}: refused to follow a redirect to {host} ({address} is {why})"
                )
        return host, found[0]

    async def run(self, headers: dict[str, str], end: float) -> Fetched:
        # The operator's own URL may point inside (a local mirror); only there.
        self.trusted = set((await self.addresses(self.url))[1])
        url, params = self.url, self.params
        hops = retries = 0
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), follow_redirects=False
        ) as client:
            while True:
                host, address = await self.check(url)
                await _space(host, end)
                request = client.build_request(
                    "GET",
                    _pinned(url, address),
                    params=params,
                    headers={**headers, "Host": _netloc(url)},
                )
                if url.startswith("https://"):
                    # TLS still names (and verifies) the host, while the socket goes to `address`.
                    request.extensions["sni_hostname"] = host
                try:
                    resp = await client.send(request, stream=True)
                except httpx.TimeoutException as exc:
                    raise FeedError(f"{url}: timed out after {self.timeout:g} s") from exc
                except httpx.HTTPError as exc:
                    raise FeedError(f"{url}: {type(exc).__name__}: {exc}") from exc
                try:
                    status = resp.status_code
                    if status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                        hops += 1
                        if hops > MAX_REDIRECTS:
                            raise FeedError(f"{self.url}: more than {MAX_REDIRECTS} redirects")
                        url, params = urljoin(url, resp.headers["location"]), None
                        continue
                    if status in (429, 503) and retries < MAX_RETRIES:
                        wait = _retry_after(resp.headers.get("retry-after"), 2.0**retries)
                        if time.monotonic() + wait >= end:
                            raise FeedError(
                                f"{url}: HTTP {status}; the server asks to wait {wait:g} s, "
                                "past this fetch's deadline"
                            )
                        retries += 1
                        await asyncio.sleep(wait)
                        continue
                    if status == 304:
                        return Fetched(
                            None, headers.get("If-None-Match"), headers.get("If-Modified-Since")
                        )
                    if status >= 400:
                        raise FeedError(f"{url}: HTTP {status} {resp.reason_phrase}")
                    body = await self.body(resp)
                    return Fetched(
                        body,
                        resp.headers.get("ETag"),
                        resp.headers.get("Last-Modified"),
                        resp.headers.get("Content-Type"),
                    )
                finally:
                    await resp.aclose()

    async def body(self, resp: httpx.Response) -> bytes:
        encodings = [
            e.strip().lower()
            for e in resp.headers.get("content-encoding", "").split(",")
            if e.strip() and e.strip().lower() != "identity"
        ]
        if len(encodings) > MAX_ENCODINGS:
            raise FeedError(f"{self.url}: {len(encodings)} stacked content encodings; refused")
        # The last encoding listed was applied last, so it is undone first.
        stages = [_Decoder(e, self.url) for e in reversed(encodings)]
        out = bytearray()
        try:
            async for chunk in resp.aiter_raw():
                for piece in _through(stages, chunk):
                    out += piece
                    if len(out) > self.max_bytes:
                        raise FeedError(
                            f"{self.url}: response larger than {self.max_bytes} bytes; stopped"
                        )
        except httpx.TimeoutException as exc:
            raise FeedError(f"{self.url}: timed out after {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise FeedError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        return bytes(out)


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def _pinned(url: str, address: str) -> str:
    """``url`` with its host replaced by the checked address."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _retry_after(value: str | None, fallback: float) -> float:
    """Seconds from a Retry-After header (seconds or an HTTP date); ``fallback`` without one."""
    if not value:
        return fallback
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_last_call: dict[str, float] = {}
_spacing_lock = threading.Lock()


async def _space(host: str, end: float) -> None:
    """Wait until the host's minimum interval since our previous call to it has passed."""
    gap = MIN_INTERVAL.get(host.lower(), 0.0)
    if not gap:
        return
    with _spacing_lock:
        now = time.monotonic()
        start = max(now, _last_call.get(host, 0.0) + gap)
        _last_call[host] = start  # reserved, so concurrent fetches queue up behind it
    if start >= end:
        raise FeedError(f"{host}: the next call allowed is past this fetch's deadline")
    await asyncio.sleep(start - now)


# -- decoding ---------------------------------------------------------------------------------


class _Decoder:
    """One content encoding, undone in pieces of at most PIECE bytes."""

    def __init__(self, encoding: str, url: str) -> None:
        if encoding in ("gzip", "x-gzip"):
            self.wbits = 16 + zlib.MAX_WBITS
        elif encoding == "deflate":
            self.wbits = zlib.MAX_WBITS
        else:
            raise FeedError(f"{url}: content encoding {encoding!r} is not supported")
        self.url = url
        self.z = zlib.decompressobj(self.wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                piece = self.z.decompress(data, PIECE)
            except zlib.error as exc:
                raise FeedError(f"{self.url}: corrupt compressed body: {exc}") from exc
            data = self.z.unconsumed_tail
            if self.z.eof and self.z.unused_data:
                # Concatenated gzip members: the rest is a stream of its own.
                data, self.z = self.z.unused_data + data, zlib.decompressobj(self.wbits)
            if piece:
                yield piece
            elif not data:
                return


def _through(stages: list[_Decoder], chunk: bytes) -> Iterator[bytes]:
    """``chunk`` passed through every stage, piece by piece, never whole."""
    if not stages:
        yield chunk
        return
    for piece in stages[0].feed(chunk):
        yield from _through(stages[1:], piece)


def _read_file(url: str, max_bytes: int) -> Fetched:
    path = Path(unquote(urlparse(url).path))
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FeedError(f"{path}: file larger than {max_bytes} bytes")
        return Fetched(path.read_bytes())
    except OSError as exc:
        raise FeedError(f"{path}: cannot read: {exc.strerror}") from exc
