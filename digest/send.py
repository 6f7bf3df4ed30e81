"""Sending over SMTP with aiosmtplib: one connection reused for a batch, TLS as configured.

TLS never falls back silently: aiosmtplib's default `start_tls=None` upgrades only when the server
offers STARTTLS, so the mode from the config is always passed explicitly. The envelope sender and
recipient are explicit too, never read from the message headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from digest.config import SmtpConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    delivery_id: int
    recipient: str
    message: EmailMessage


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    recipient: str
    state: str  # sent | retry | failed
    detail: str = ""


def _client(cfg: SmtpConfig) -> aiosmtplib.SMTP:
    password = cfg.password()
    return aiosmtplib.SMTP(
        hostname=cfg.host,
        port=cfg.port,
        timeout=cfg.timeout,
        use_tls=cfg.security == "tls",
        start_tls=cfg.security == "starttls",
        username=cfg.username,
        password=password.get_secret_value() if password else None,
    )


def classify(exc: BaseException) -> tuple[str, str]:
    """(state, detail) for a failed attempt: 5xx is permanent, 4xx and network errors retry."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in exc.recipients]
        text = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
        return ("failed" if codes and all(500 <= c < 600 for c in codes) else "retry"), text
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        state = "failed" if 500 <= exc.code < 600 else "retry"
        return state, f"{exc.code} {exc.message}"
    return "retry", f"{type(exc).__name__}: {exc}"


async def send_batch(
    cfg: SmtpConfig,
    items: Sequence[Outgoing],
    on_result: Callable[[Outcome], None],
) -> list[Outcome]:
    """Send every message over one connection, reconnecting after a connection-level error.

    ``on_result`` runs right after each server reply, so the caller can commit `sent` before the
    next message goes out.
    """
    outcomes: list[Outcome] = []
    smtp: aiosmtplib.SMTP | None = None
    try:
        for n, item in enumerate(items):
            if smtp is None or not smtp.is_connected:
                try:
                    smtp = _client(cfg)
                    await smtp.connect()
                except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                    smtp = None
                    detail = (
                        f"cannot connect to SMTP server {cfg.host}:{cfg.port} "
                        f"(security={cfg.security}): {exc}"
                    )
                    log.error("%s", detail)
                    # Nothing more can go out on this run; every remaining row is retried later.
                    for rest in items[n:]:
                        outcome = Outcome(rest.delivery_id, rest.recipient, "retry", detail)
                        on_result(outcome)
                        outcomes.append(outcome)
                    return outcomes
            try:
                await smtp.send_message(
                    item.message, sender=cfg.from_address, recipients=[item.recipient]
                )
                outcome = Outcome(item.delivery_id, item.recipient, "sent")
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                state, detail = classify(exc)
                outcome = Outcome(item.delivery_id, item.recipient, state, detail)
                log.warning("delivery %s: %s (%s)", item.delivery_id, state, detail)
                # After any error the session state is unknown: start the next one afresh.
                await _close(smtp)
                smtp = None
            on_result(outcome)
            outcomes.append(outcome)
    finally:
        if smtp is not None:
            await _close(smtp)
    return outcomes


async def _close(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        smtp.close()
