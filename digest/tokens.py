"""Signed tokens in the email's links: unsubscribe, feedback on one paper, the digest as a page.

One salt per purpose, so a token made for one link is refused by every other endpoint.
itsdangerous compares signatures in constant time. Unsubscribe tokens carry no timestamp, so they
never expire. Keys rotate: the key file may hold several keys, one per line. The first line
signs; every line verifies, so links in digests already sent keep working after a rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from itsdangerous import BadSignature, URLSafeSerializer

from digest.config import Config
from digest.store_feedback import VERDICTS

SALTS = {
    "unsubscribe": "digest.unsubscribe",
    "feedback": "digest.feedback",
    "digest": "digest.view",
}


class BadToken(Exception):
    """Forged, truncated, from another purpose, or signed by a key no longer configured."""


@dataclass(frozen=True)
class FeedbackLink:
    email: str
    paper_id: str
    day: date
    verdict: str


def _keys(cfg: Config) -> list[str]:
    lines = [k.strip() for k in cfg.web.secret_key().get_secret_value().splitlines()]
    keys = [k for k in lines if k]
    # itsdangerous signs with the last key of the list and verifies with all of them.
    return list(reversed(keys))


class Signer:
    """The configured keys, read once: one digest signs a couple of dozen links."""

    def __init__(self, cfg: Config) -> None:
        self.keys = _keys(cfg)

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        return URLSafeSerializer(self.keys, salt=SALTS[purpose])

    def unsubscribe(self, email: str) -> str:
        return str(self._serializer("unsubscribe").dumps(email.lower()))

    def feedback(self, email: str, paper_id: str, day: date, verdict: str) -> str:
        payload = [email.lower(), paper_id, day.isoformat(), verdict]
        return str(self._serializer("feedback").dumps(payload))

    def digest(self, email: str, day: date) -> str:
        return str(self._serializer("digest").dumps([email.lower(), day.isoformat()]))

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
    value = Signer(cfg).load("unsubscribe", token)
    if not isinstance(value, str):
        raise BadToken("unsubscribe")
    return value


def read_feedback(cfg: Config, token: str) -> FeedbackLink:
    email, paper_id, day, verdict = _strings(Signer(cfg).load("feedback", token), 4, "feedback")
    if verdict not in VERDICTS:
        raise BadToken("feedback")
    try:
        return FeedbackLink(email, paper_id, date.fromisoformat(day), verdict)
    except ValueError as exc:
        raise BadToken("feedback") from exc


def read_digest(cfg: Config, token: str) -> tuple[str, date]:
    email, day = _strings(Signer(cfg).load("digest", token), 2, "digest")
    try:
        return email, date.fromisoformat(day)
    except ValueError as exc:
        raise BadToken("digest") from exc
