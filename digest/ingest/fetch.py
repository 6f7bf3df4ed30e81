"""Fetching a source's bytes: HTTP with timeouts, a size cap and conditional GET, or a local file.

`file://` URLs exist for offline use (the demo, tests, a listing saved by hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from digest import __version__
from digest.errors import FeedError

USER_AGENT = f"digest/{__version__} (self-hosted research paper digest)"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    content: bytes | None  # None: not modified since the validators we sent
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    etag: str | None = None,
    last_modified: str | None = None,
    params: dict[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """The body at ``url``, or ``Fetched(None)`` when the server says it has not changed."""
    if url.startswith("file://"):
        return _read_file(url, max_bytes)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(timeout),
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                transport=transport,
            ) as client,
            client.stream("GET", url, headers=headers, params=params) as resp,
        ):
            if resp.status_code == 304:
                return Fetched(None, etag, last_modified, 304)
            if resp.status_code >= 400:
                raise FeedError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}")
            chunks: list[bytes] = []
            size = 0
            # iter_bytes decompresses, so the cap also bounds a gzip bomb's output.
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError(f"{url}: response larger than {max_bytes} bytes; stopped")
                chunks.append(chunk)
            return Fetched(
                b"".join(chunks),
                resp.headers.get("ETag"),
                resp.headers.get("Last-Modified"),
                resp.status_code,
            )
    except httpx.TimeoutException as exc:
        raise FeedError(f"{url}: timed out after {timeout:g} s") from exc
    except httpx.TooManyRedirects as exc:
        raise FeedError(f"{url}: more than {MAX_REDIRECTS} redirects") from exc
    except httpx.HTTPError as exc:
        raise FeedError(f"{url}: {type(exc).__name__}: {exc}") from exc


def _read_file(url: str, max_bytes: int) -> Fetched:
    path = Path(unquote(urlparse(url).path))
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FeedError(f"{path}: file larger than {max_bytes} bytes")
        return Fetched(path.read_bytes())
    except OSError as exc:
        raise FeedError(f"{path}: cannot read: {exc.strerror}") from exc
