"""What an SMTP reply means for a digest, how long to wait before trying again, and the bytes
that go on the wire after 354. Pure functions: the engine in digest.mail.engine applies them."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    state: str  # sent | retry | ambiguous | bounced | relay | systemic
    detail: str = ""


def decide(phase: str, code: int | None, text: str = "") -> Decision:
    """What one SMTP attempt means, from where it ended and the reply code (None: no reply).

    ``phase`` is connect, mail, rcpt or data (data: the message was handed over).
    """
    detail = f"{code} {text}".strip() if code is not None else text
    if code is None:
        if phase == "connect":
            # The relay is down or unreachable: every digest would fail the same way.
            return Decision("relay", text)
        if phase == "data":
            return Decision("ambiguous", f"connection lost after the message was sent: {text}")
        return Decision("retry", text)
    lowered = text.lower()
    if code == 421:
        return Decision("relay", detail)
    if 200 <= code < 300 and phase == "data":
        return Decision("sent", detail)
    if code < 0 or code < 400:
        # Garbage or an unexpected positive reply: nothing is known, try again later (B7).
        return Decision("retry", f"unexpected reply: {detail}")
    policy = "5.7." in text or "message-id" in lowered
    if 400 <= code < 500:
        return Decision("retry", detail)
    # 5xx from here on.
    if phase == "connect" or phase == "mail" or policy:
        return Decision("systemic", detail)
    if phase == "rcpt" and code == 552:
        # RFC 5321 §4.5.3.1.10: "552 too many recipients / mailbox full" on RCPT is temporary.
        return Decision("retry", detail)
    return Decision("bounced", detail)


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: half of min(cap, base * 2^(attempts-1)) fixed, half random.

    The random half spreads many digests that failed together; the fixed half makes sure a
    struggling relay is never retried almost at once (full jitter can draw near zero).
    """
    step = min(cap, base * 2.0 ** max(0, attempts - 1))
    return float(step / 2 + rng.uniform(0, step / 2))


def is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
