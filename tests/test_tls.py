"""TLS exactly as configured: implicit TLS and STARTTLS against a real TLS server (aiosmtpd with
a throwaway CA from trustme); certificates are checked; nothing ever goes in plaintext."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller

from digest.config import Config, SmtpConfig
from digest.mail.engine import Engine
from digest.service.demo import free_port
from digest.store import Store
from tests.conftest import SmtpHandler
from tests.test_reliability import Clock, emails, plan


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server(ca: trustme.CA, mode: str) -> tuple[Controller, SmtpHandler, int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    handler = SmtpHandler()
    port = free_port()
    if mode == "tls":
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=ctx)
    else:
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True
        )
    controller.start()
    return controller, handler, port


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def cfg_for(tmp_path: Path, port: int, security: str, ca_file: Path | None) -> Config:
    key = tmp_path / "key"
    key.write_text("k" * 32)
    return Config(
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=port,
            security=security,  # type: ignore[arg-type]
            from_address="digest@papers.example.org",
            timeout=5,
            ca_file=ca_file,
        ),
        web={"secret_key_file": key},  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> Clock:
    from tests.conftest import NOW

    return Clock(NOW)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_mail_goes_over_tls_to_a_trusted_relay(
    store: Store, ca: trustme.CA, ca_file: Path, tmp_path: Path, clock: Clock, security: str
) -> None:
    controller, handler, port = _server(ca, security)
    try:
        plan(store, emails(3), clock)
        report = asyncio.run(Engine(store, cfg_for(tmp_path, port, security, ca_file), clock).run())
        assert report.counts["sent"] == 3
        assert sorted(m.rcpt_tos[0] for m in handler.received) == emails(3)
    finally:
        controller.stop()


def test_an_untrusted_certificate_pauses_delivery_and_sends_nothing(
    store: Store, ca: trustme.CA, tmp_path: Path, clock: Clock
) -> None:
    controller, handler, port = _server(ca, "tls")
    try:
        plan(store, emails(3), clock)
        # No ca_file: the throwaway CA is not trusted, so the certificate check fails.
        report = asyncio.run(Engine(store, cfg_for(tmp_path, port, "tls", None), clock).run())
        assert report.paused is not None and "TLS" in report.paused
        assert handler.received == [] and report.counts["sent"] == 0
    finally:
        controller.stop()
