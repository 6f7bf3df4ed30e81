"""Signed tokens in the email's links: unsubscribe, feedback on one paper, the digest as a page,
the reader's digests as an Atom feed.

A token names the reader by an opaque ref (a keyed hash of the address, see `subscriber_ref`),
never by the address: a forwarded email or a shared digest page leaks no address. The store
maps refs back (`LinkRef`). Tokens made before refs carry the address itself and still work:
`is_address` tells the two apart (an address has an "@", a ref never does).
One salt per purpose, so a token made for one link is refused by every other endpoint.
itsdangerous compares signatures in constant time. Unsubscribe tokens carry no timestamp, so they
never expire. Keys rotate: the key file may hold several keys, one per line. The first line
signs; every line verifies, so links in digests already sent keep working after a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from itsdangerous import BadSignature, URLSafeSerializer
from itsdangerous.signer import HMACAlgorithm

from digest.config import Config
from digest.states import Verdict

SALTS = {
    "unsubscribe": "digest.unsubscribe",
    "feedback": "digest.feedback",
    "digest": "digest.view",
    "feed": "digest.feed",
}


class BadToken(Exception):
    """Forged, truncated, from another purpose, or signed by a key no longer configured."""


@dataclass(frozen=True)
class FeedbackLink:
    who: str  # a ref, or the address in a token made before refs
    paper_id: str
    day: date
    verdict: str


def is_address(who: str) -> bool:
    return "@" in who


def subscriber_ref(key: str, email: str) -> str:
    """An opaque, stable id for a reader: 128 bits of HMAC-SHA256 under the signing key, so
    nobody without the key can tell whose it is or make one for an address."""
    mac = hmac.new(key.encode(), b"digest.subscriber\0" + email.lower().encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode()


def _keys(cfg: Config) -> list[str]:
    lines = [k.strip() for k in cfg.web.secret_key().get_secret_value().splitlines()]
    keys = [k for k in lines if k]
    # itsdangerous signs with the last key of the list and verifies with all of them.
    return list(reversed(keys))


class _Signing:
    """Tokens itsdangerous reads (`URLSafeSerializer.loads`), with its key derived once per
    purpose instead of once per token, and each signature one call of `hmac.digest`.

    The payload is the compact JSON itsdangerous writes, never zlib-compressed: `dumps` tries
    compressing every payload and keeps the result only when shorter, which for payloads of a
    few dozen bytes it almost never is, but each try costs zlib's 256 KB state, about 40 us.
    With forty links a digest, that and the per-token set-up were 2 ms of every digest. A
    payload `dumps` would not compress gives the same token byte for byte (tests hold the two
    side by side).
    """

    def __init__(self, serializer: URLSafeSerializer) -> None:
        signer = serializer.make_signer()
        self.slow = serializer.dumps
        self.sep = signer.sep
        self.key: bytes | None = None
        if isinstance(signer.algorithm, HMACAlgorithm):
            self.key = signer.derive_key()
            self.digest = signer.algorithm.digest_method

    def __call__(self, value: object) -> str:
        return self.sign(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def sign(self, payload_json: str) -> str:
        """The token of a payload already written as that compact JSON."""
        if self.key is None:  # an itsdangerous that signs some other way: its own path
            return str(self.slow(json.loads(payload_json)))
        payload = _b64(payload_json.encode())
        return (payload + self.sep + _b64(hmac.digest(self.key, payload, self.digest))).decode()


def _b64(data: bytes) -> bytes:
    """itsdangerous's `base64_encode`: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@lru_cache(maxsize=65536)
def _json_str(value: str) -> str:
    """A string as compact JSON writes it (`ensure_ascii=False`): each paper id once a run."""
    return json.dumps(value, ensure_ascii=False)


class Signer:
    """The configured keys, read once: one digest signs a couple of dozen links."""

    def __init__(self, cfg: Config) -> None:
        self.keys = _keys(cfg)
        self._signing = {purpose: _Signing(self._serializer(purpose)) for purpose in SALTS}
        self._last_ref = ("", "")

    @property
    def signing_key(self) -> str:
        """The key new tokens, refs and Message-IDs are made with (the others only verify)."""
        return self.keys[-1]

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        return URLSafeSerializer(self.keys, salt=SALTS[purpose])

    def ref(self, email: str) -> str:
        """The reader's ref under the signing key (itsdangerous signs with the last one).
        The last one is remembered: a digest asks for the same reader's ref for every link."""
        last = self._last_ref  # read once: serve's threads share a run's signer
        if last[0] == email:
            return last[1]
        ref = subscriber_ref(self.signing_key, email)
        self._last_ref = (email, ref)
        return ref

    def unsubscribe(self, email: str) -> str:
        return self._signing["unsubscribe"](self.ref(email))

    def feedback(self, email: str, paper_id: str, day: date, verdict: str) -> str:
        # Two links for each paper of each digest: the JSON of the list is written by hand,
        # from parts that need no escaping (a ref is URL-safe base64, a date is ISO, a verdict
        # a word) and the paper id as JSON writes it, remembered. Tests hold the tokens
        # against itsdangerous's own.
        ref, pid, when = self.ref(email), _json_str(paper_id), day.isoformat()
        payload = f'["{ref}",{pid},"{when}",{_json_str(verdict)}]'
        return self._signing["feedback"].sign(payload)

    def digest(self, email: str, day: date) -> str:
        return self._signing["digest"]([self.ref(email), day.isoformat()])

    def feed(self, email: str) -> str:
        """The reader's Atom feed of their digests: one link for good, like unsubscribing."""
        return self._signing["feed"]([self.ref(email)])

    def load(self, purpose: str, token: str) -> object:
        try:
            return self._serializer(purpose).loads(token)
        except (BadSignature, UnicodeError, ValueError) as exc:
            raise BadToken(purpose) from exc


def _strings(value: object, n: int, purpose: str) -> list[str]:
    """A signed payload of exactly n strings, or BadToken."""
    if not (isinstance(value, list) and len(value) == n and all(isinstance(v, str) for v in value)):
        raise BadToken(purpose)
    return value


def unsubscribe_token(cfg: Config, email: str) -> str:
    return Signer(cfg).unsubscribe(email)


def read_unsubscribe(cfg: Config, token: str) -> str:
    """The reader the token names: a ref, or an address (`is_address`) in an old token."""
    value = Signer(cfg).load("unsubscribe", token)
    if not isinstance(value, str):
        raise BadToken("unsubscribe")
    return value


def read_feedback(cfg: Config, token: str) -> FeedbackLink:
    who, paper_id, day, verdict = _strings(Signer(cfg).load("feedback", token), 4, "feedback")
    if verdict not in tuple(Verdict):
        raise BadToken("feedback")
    try:
        return FeedbackLink(who, paper_id, date.fromisoformat(day), verdict)
    except ValueError as exc:
        raise BadToken("feedback") from exc


def read_digest(cfg: Config, token: str) -> tuple[str, date]:
    who, day = _strings(Signer(cfg).load("digest", token), 2, "digest")
    try:
        return who, date.fromisoformat(day)
    except ValueError as exc:
        raise BadToken("digest") from exc


def read_feed(cfg: Config, token: str) -> str:
    """The reader a feed link names: a ref."""
    (who,) = _strings(Signer(cfg).load("feed", token), 1, "feed")
    return who
