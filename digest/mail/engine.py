"""The delivery engine: claims due digests from the database and sends them over a small pool of
reused SMTP connections, classifying every reply by its code (not by exception type).

State machine, one row per (subscriber, digest date):

    pending -> sending (claimed, with a lease) -> sent | retry | ambiguous | bounced | expired
                                                  | dead | cancelled

- `sent` is committed right after the server's 250, before the next message goes out.
- 4xx and network errors before the message was handed over: `retry` with exponential backoff
  and jitter, until the digest's deadline; then `expired` (a soft bounce).
- A lost connection or timeout after the message was handed over: `ambiguous`. The server may
  have stored it (RFC 5321 §6.1). Policy `resend` (default) sends it again with the same
  Message-ID, so a duplicate is possible only here and receivers can fold it; `hold` leaves it
  for the operator.
- 5xx for the recipient: `bounced`, counted; enough bounces disable the subscriber.
- 421 anywhere: the relay is busy; back off the relay, not the recipient.
- Systemic failures (authentication, MAIL FROM refused, policy rejections such as 5.7.26, TLS
  not available): pause everything and say why, instead of bouncing every subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import ssl
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiosmtplib

from digest.config import Config
from digest.mail.policy import Decision, backoff, decide, is_tls_failure
from digest.states import Delivery as DS
from digest.store.deliveries import Claim
from digest.store.papers import Store
from digest.store.schema import as_utc_naive, utcnow
from digest.text import mask_addresses

log = logging.getLogger("digest.send")  # log names are what operators filter on: kept
# Outcomes that are not row states, and the state their row is left in.
_STORED_AS = {"relay": DS.RETRY, "systemic": DS.RETRY}
PAUSE_KEY = "paused"
# Until when the relay is left alone after a 421; shared by every run and process.
RELAY_KEY = "relay_backoff_until"
_NETWORK_ERRORS = (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError)
# Rows a worker claims at once: few enough that an unsubscribe is seen within seconds,
# enough to keep the database out of the way of the sending.
BATCH = 50
# How long (seconds) a recorded 250 waits for the other connections' to share its commit,
# unless every connection is already waiting: a commit per message was a sixth of the
# engine's time. Each connection still sends nothing more until its own row is committed.
GROUP_WAIT = 0.002


@dataclass
class EngineReport:
    counts: Counter[str] = field(default_factory=Counter)
    paused: str | None = None
    connections: int = 0
    attempts: int = 0
    possible_duplicates: int = 0
    # Set when due digests were left waiting for the relay's backoff to end (the relay was down
    # or said 421): the run did not send them, and they go out at the first run after this.
    relay_until: datetime | None = None

    def add(self, other: EngineReport) -> None:
        """Fold another engine pass (another process, or a later pass of the same run) in."""
        self.counts.update(other.counts)
        self.connections += other.connections
        self.attempts += other.attempts
        self.possible_duplicates += other.possible_duplicates
        self.paused = self.paused or other.paused
        self.relay_until = other.relay_until or self.relay_until


class _Pause(Exception):
    pass


class Engine:
    """Sends every due digest, then returns. Safe to run in several processes at once."""

    def __init__(
        self,
        store: Store,
        cfg: Config,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        on_event: Callable[[str, Claim, str], None] | None = None,
        halt: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.policy = cfg.delivery
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_event = on_event
        # Set from another thread (SIGTERM in `digest serve`): finish the message in flight,
        # record it, give back the rest of the batch, return.
        self.halt = halt or threading.Event()
        self.report = EngineReport()
        self.stop = asyncio.Event()
        self._relay_until: datetime | None = None
        self._recent: deque[bool] = deque(maxlen=max(self.policy.error_pause_min * 2, 10))
        self._next_slot = 0.0
        # How often (seconds) workers look for a pause set by another process.
        self.pause_check_interval = 1.0
        self._pause_checked = 0.0
        self._mail_from = f"MAIL FROM:<{cfg.smtp.from_address}>".encode()
        self._sent_ids: list[int] = []
        self._workers = 0  # connections' loops still running (`_record_sent` waits for them)
        self._flush_at: asyncio.TimerHandle | None = None
        self._lease = timedelta(seconds=self.policy.lease_seconds)
        # Room for clocks that differ between nodes: a worker stops starting digests this long
        # before its claim's lease runs out (by its own clock).
        self._lease_margin = min(self._lease / 10, timedelta(seconds=60))
        self._sent_done: asyncio.Future[None] | None = None

    async def run(self, stop: asyncio.Event | None = None) -> EngineReport:
        if stop is not None:
            self.stop = stop
        reason = self.store.get_control(PAUSE_KEY)
        if reason:
            self.report.paused = reason
            return self.report
        until = self.store.get_control(RELAY_KEY)
        if until:
            self._relay_until = datetime.fromisoformat(until)
        swept = self.store.sweep(self.clock(), self.policy.max_attempts, self.policy.resends)
        self.report.counts.update({k: v for k, v in swept.items() if v})
        workers = [self._worker(i) for i in range(self.policy.connections)]
        await asyncio.gather(*workers)
        return self.report

    # -- one connection's loop ----------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        self._workers += 1
        try:
            await self._work(n)
        finally:
            self._workers -= 1
            self._flush_if_all_wait()

    async def _work(self, n: int) -> None:
        smtp: aiosmtplib.SMTP | None = None
        used = 0
        batch: list[Claim] = []
        token = f"{uuid.uuid4().hex}-{n}"
        deadline = self.clock()  # set with each claim
        try:
            while not (self.stop.is_set() or self.halt.is_set()) and self.report.paused is None:
                self._check_pause()
                if self._relay_until is not None and self.clock() < self._relay_until:
                    # The relay asked for a break; due rows wait for the next run.
                    self.report.relay_until = self._relay_until
                    return
                if not batch:
                    # From before the claim: its lease is counted from no earlier than this.
                    deadline = self.clock() + self._lease - self._lease_margin
                    batch = self._claim(token)
                    if not batch:
                        return
                row = batch.pop(0)
                await self._rate_gate()
                worn = used >= self.policy.messages_per_connection
                if smtp is None or not smtp.is_connected or worn:
                    await _close(smtp)
                    smtp, used = None, 0
                    try:
                        smtp = await self._connect()
                    except _NETWORK_ERRORS as exc:
                        code = getattr(exc, "code", None)
                        where = f"cannot connect to {self.cfg.smtp.host}:{self.cfg.smtp.port}"
                        decision = decide("connect", code, f"{where}: {_text(exc)}")
                        self._apply(row, decision, counted=False)
                        continue
                if self.clock() >= deadline:
                    # The claim's lease is (nearly) over, and then another runner takes these
                    # rows for a dead runner's: all but the one in flight as never tried. So
                    # none is started past it: they go back, and are claimed again.
                    self.store.release([row.id, *(r.id for r in batch)], token, self.clock())
                    batch = []
                    continue
                used += 1
                decision = await self._attempt(smtp, row)
                if decision.state == DS.SENT:
                    await self._record_sent(row.id)
                    if row.ambiguous_count:  # an earlier copy may have arrived too
                        self.report.possible_duplicates += 1
                self._apply(row, decision)
                if decision.state != DS.SENT:
                    # After any error the session is in an unknown state: start afresh.
                    await _close(smtp)
                    smtp = None
        except _Pause:
            pass
        finally:
            # Claimed but not attempted (pause, stop, relay backoff): back in the queue at once,
            # so a shutdown leaves nothing in `sending`.
            self.store.release([r.id for r in batch], token, self.clock())
            await _close(smtp)

    async def _record_sent(self, delivery_id: int) -> None:
        """Commit `sent` before this worker sends again (group commit).

        Workers whose 250 arrives within `GROUP_WAIT` of the first share one UPDATE and one
        commit (at once when every worker is waiting); each waits until its row is durable.
        """
        self._sent_ids.append(delivery_id)
        if self._sent_done is None:
            loop = asyncio.get_running_loop()
            self._sent_done = loop.create_future()
            self._flush_at = loop.call_later(GROUP_WAIT, self._flush_sent)
        done = self._sent_done
        self._flush_if_all_wait()
        await asyncio.shield(done)

    def _flush_if_all_wait(self) -> None:
        if self._flush_at is not None and len(self._sent_ids) >= self._workers:
            self._flush_at.cancel()
            self._flush_sent()

    def _flush_sent(self) -> None:
        ids, done = self._sent_ids, self._sent_done
        self._sent_ids, self._sent_done, self._flush_at = [], None, None
        assert done is not None
        try:
            self.store.mark_sent(ids, utcnow())
        except BaseException as exc:
            # Every waiting worker must hear of it: asyncio would only log an exception raised
            # in a callback, and the workers would wait for ever.
            done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            done.set_result(None)

    def _claim(self, token: str) -> list[Claim]:
        """The next few due digests for this worker, minus subscribers who opted out since."""
        size = max(1, min(BATCH, self.policy.messages_per_connection))
        while True:
            rows = self.store.claim_batch(self.clock(), self._lease, size, token)
            if not rows:
                return []
            blocked = self.store.blocked([r.subscriber for r in rows])
            for r in rows:
                if r.subscriber in blocked:
                    self.store.mark_cancelled(r.id, blocked[r.subscriber], token)
                    self._count(r, DS.CANCELLED, blocked[r.subscriber])
            for r in rows:
                if r.message is None and r.subscriber not in blocked:
                    self.store.mark_dead(r.id, "no message stored", token)
                    self._count(r, DS.DEAD, "no message stored")
            wanted = [r for r in rows if r.subscriber not in blocked and r.message is not None]
            if wanted:
                return wanted

    def _check_pause(self) -> None:
        """A pause set elsewhere (`digest pause`, another node) stops this run between messages."""
        now = asyncio.get_running_loop().time()
        if now - self._pause_checked < self.pause_check_interval:
            return
        self._pause_checked = now
        reason = self.store.get_control(PAUSE_KEY)
        if reason:
            self.report.paused = reason
            raise _Pause(reason)

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp_cfg = self.cfg.smtp
        password = smtp_cfg.password()
        smtp = aiosmtplib.SMTP(
            hostname=smtp_cfg.host,
            port=smtp_cfg.port,
            timeout=smtp_cfg.timeout,
            use_tls=smtp_cfg.security == "tls",
            # Explicit: aiosmtplib's default (None) would quietly stay in plaintext.
            start_tls=smtp_cfg.security == "starttls",
            username=smtp_cfg.username,
            password=password.get_secret_value() if password else None,
            cert_bundle=str(smtp_cfg.ca_file) if smtp_cfg.ca_file else None,
        )
        self.report.connections += 1
        try:
            await smtp.connect()
            # MAIL/RCPT/DATA go out as plain commands (see _attempt), so greet explicitly.
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except (aiosmtplib.SMTPException, ssl.SSLError) as exc:
            smtp.close()
            if "STARTTLS" in str(exc) or "starttls" in str(exc) or is_tls_failure(exc):
                # No TLS, or TLS we cannot trust, although the config demands it: fail closed
                # and loudly (a pause), never fall back to plaintext.
                raise aiosmtplib.SMTPResponseException(530, f"5.7.0 TLS: {exc}") from exc
            raise
        return smtp

    async def _attempt(self, smtp: aiosmtplib.SMTP, row: Claim) -> Decision:
        """MAIL, RCPT, DATA for one digest; the phase tells what a lost connection means."""
        self.report.attempts += 1
        phase = "mail"
        try:
            # Plain commands: both addresses were validated as plain addr-specs at load, and
            # aiosmtplib's mail()/rcpt() would re-parse them with email.utils on every message.
            # execute_command still refuses any control character in a command.
            reply = await smtp.execute_command(self._mail_from)
            if reply.code != 250:
                return decide("mail", reply.code, reply.message)
            phase = "rcpt"
            reply = await smtp.execute_command(b"RCPT TO:<" + row.subscriber.encode() + b">")
            if reply.code not in (250, 251):
                return decide("rcpt", reply.code, reply.message)
            # The DATA phase by hand (aiosmtplib's data() re-normalises and re-scans all 30 KB
            # of every message with regexes, the largest cost per message): DATA, then the
            # message as stored for sending (digest.store.packing), then the final dot.
            start = await smtp.execute_command(b"DATA")
            if start.code != 354:
                return decide("rcpt", start.code, start.message)
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost after 354")
            phase = "data"
            assert row.message is not None  # _claim hands out only rows with a message
            protocol.write(row.message)
            protocol.write(b".\r\n")
            reply = await protocol.read_response(timeout=self.policy.data_timeout)
            return decide("data", reply.code, reply.message)
        except aiosmtplib.SMTPResponseException as exc:
            return decide(phase, exc.code, exc.message)
        except _NETWORK_ERRORS as exc:
            return decide(phase, None, _text(exc))

    # -- outcomes ---------------------------------------------------------------------------

    def _apply(self, row: Claim, d: Decision, counted: bool = True) -> None:
        now = self.clock()
        pol = self.policy
        # A connect failure says nothing about this digest: its attempt is given back.
        attempts = row.attempts if counted else max(0, row.attempts - 1)
        if d.state == DS.SENT:
            pass  # recorded by _record_sent, before this worker sends again
        elif d.state == DS.BOUNCED:
            self.store.mark_bounced(row.id, d.detail, row.token)
            if self.store.record_bounce(row.subscriber, True, pol.bounce_threshold, now.date()):
                # By the delivery's id: `digest deliveries` says whose (no address in a log).
                log.warning("delivery=%s: its reader disabled after repeated bounces", row.id)
        elif d.state == DS.AMBIGUOUS:
            # Sent again (same Message-ID) at most `resends` times; then held: a relay that
            # stores every copy and never answers must not get one per retry.
            resend = row.ambiguous_count < pol.resends
            nxt = now + timedelta(seconds=pol.retry_base) if resend else None
            self.store.mark_ambiguous(row.id, row.ambiguous_count + 1, nxt, d.detail, row.token)
            self.report.possible_duplicates += 1
        elif d.state == "relay":
            self._relay_until = now + timedelta(seconds=pol.relay_backoff)
            self.store.set_control(RELAY_KEY, self._relay_until.isoformat())
            self.store.mark_retry(
                row.id, max(0, row.attempts - 1), self._relay_until, d.detail, row.token
            )
        elif d.state == "systemic":
            self.store.mark_retry(row.id, max(0, row.attempts - 1), now, d.detail, row.token)
            self._count(row, "systemic", d.detail)
            self._pause(f"relay refused the service: {d.detail}")
        else:  # retry
            delay = backoff(attempts, pol.retry_base, pol.retry_max, self.rng)
            nxt = now + timedelta(seconds=delay)
            expire_at = row.expire_at
            # Temporary failures are bounded by the deadline, not by a count: a relay that defers
            # for an hour should still get the digest out before the next one.
            if expire_at is not None and as_utc_naive(nxt) > as_utc_naive(expire_at):
                self.store.mark_expired(row.id, attempts, d.detail, row.token)
                self.store.record_bounce(row.subscriber, False, pol.bounce_threshold, now.date())
                d = Decision(DS.EXPIRED, d.detail)
            else:
                self.store.mark_retry(row.id, attempts, nxt, d.detail, row.token)
        self._count(row, d.state, d.detail)
        if counted and d.state != "systemic":
            self._watch_error_rate(d.state == DS.SENT)

    def _count(self, row: Claim, state: str, detail: str) -> None:
        self.report.counts[state] += 1
        # Anything but a message sent is worth a look: a monitor on WARNING sees a relay down.
        level = logging.INFO if state == DS.SENT else logging.WARNING
        if log.isEnabledFor(level):  # 100,000 lines a run: nothing made for a silent one
            # The state the row is left in, with what happened where that differs.
            stored = _STORED_AS.get(state)
            shown = f"{stored} outcome={state}" if stored else state
            # By the delivery's id (`digest deliveries` says whose), and the relay's reply,
            # which often quotes the recipient, with addresses masked (the row keeps it whole).
            masked = mask_addresses(detail)
            log.log(level, "delivery=%s state=%s detail=%r", row.id, shown, masked)
        if self.on_event is not None:
            self.on_event(state, row, detail)

    def _watch_error_rate(self, ok: bool) -> None:
        self._recent.append(ok)
        failures = self._recent.count(False)
        if len(self._recent) >= self.policy.error_pause_min and (
            failures / len(self._recent) > self.policy.error_pause_ratio
        ):
            self._pause(f"error rate {failures}/{len(self._recent)} over the last attempts")

    def _pause(self, reason: str) -> None:
        if self.report.paused is None:
            # The relay's reply may quote the recipient: masked in the log (the stored reason,
            # for `digest status`, keeps it).
            shown = mask_addresses(reason)
            log.error("pausing delivery: %s (resume with `digest resume`)", shown)
            self.store.set_control(PAUSE_KEY, reason)
            self.report.paused = reason
        raise _Pause(reason)

    async def _rate_gate(self) -> None:
        rate = self.policy.rate_limit
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / rate
        if slot > now:
            await asyncio.sleep(slot - now)


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _close(smtp: aiosmtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        if smtp.is_connected:
            await asyncio.wait_for(smtp.quit(), timeout=5)
    except (*_NETWORK_ERRORS, asyncio.CancelledError):
        smtp.close()


def _engine_process(cfg: Config, share: int, fixed_now: datetime | None) -> EngineReport:
    """One sending process: its own database connections, its share of the SMTP connections."""
    store = Store(cfg.database_url)
    part = cfg.model_copy(
        update={"delivery": cfg.delivery.model_copy(update={"connections": share})}
    )
    try:
        clock = (lambda: fixed_now) if fixed_now is not None else utcnow
        return asyncio.run(Engine(store, part, clock).run())
    finally:
        store.dispose()


def deliver(
    store: Store,
    cfg: Config,
    fixed_now: datetime | None = None,
    halt: threading.Event | None = None,
) -> EngineReport:
    """Send every due digest now, in `[delivery] processes` processes; the merged report.

    One process is bound by a single core (aiosmtplib is pure Python); more processes claim
    from the same queue and never share a row, as several nodes would.
    """
    n = min(cfg.delivery.processes, cfg.delivery.connections)
    if n <= 1:
        clock = (lambda: fixed_now) if fixed_now is not None else utcnow
        return asyncio.run(Engine(store, cfg, clock, halt=halt).run())
    shares = [
        cfg.delivery.connections // n + (1 if i < cfg.delivery.connections % n else 0)
        for i in range(n)
    ]
    # spawn, not fork: the parent holds database connections and maybe an event loop.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        reports = list(pool.map(_engine_process, [cfg] * n, shares, [fixed_now] * n))
    merged = EngineReport()
    for r in reports:
        merged.add(r)
    return merged
