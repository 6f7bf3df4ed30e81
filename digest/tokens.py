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

SALTS = {
    "unsubscribe": "digest.unsubscribe",
    "feedback": "digest.feedback",
    "digest": "digest.view",
}
VERDICTS = ("like", "dislike")


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


def _serializer(cfg: Config, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(_keys(cfg), salt=SALTS[purpose])


def _load(cfg: Config, purpose: str, token: str) -> object:
    try:
        return _serializer(cfg, purpose).loads(token)
    except (BadSignature, UnicodeError, ValueError) as exc:
        raise BadToken(purpose) from exc


def unsubscribe_token(cfg: Config, email: str) -> str:
    return str(_serializer(cfg, "unsubscribe").dumps(email.lower()))


def read_unsubscribe(cfg: Config, token: str) -> str:
    value = _load(cfg, "unsubscribe", token)
    if not isinstance(value, str):
        raise BadToken("unsubscribe")
    return value


def feedback_token(cfg: Config, email: str, paper_id: str, day: date, verdict: str) -> str:
    payload = [email.lower(), paper_id, day.isoformat(), verdict]
    return str(_serializer(cfg, "feedback").dumps(payload))


def read_feedback(cfg: Config, token: str) -> FeedbackLink:
    value = _load(cfg, "feedback", token)
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, str) for v in value)):
        raise BadToken("feedback")
    try:
        link = FeedbackLink(value[0], value[1], date.fromisoformat(value[2]), value[3])
    except ValueError as exc:
        raise BadToken("feedback") from exc
    if link.verdict not in VERDICTS:
        raise BadToken("feedback")
    return link


def digest_token(cfg: Config, email: str, day: date) -> str:
    return str(_serializer(cfg, "digest").dumps([email.lower(), day.isoformat()]))


def read_digest(cfg: Config, token: str) -> tuple[str, date]:
    value = _load(cfg, "digest", token)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadToken("digest")
    try:
        return value[0], date.fromisoformat(value[1])
    except ValueError as exc:
        raise BadToken("digest") from exc
