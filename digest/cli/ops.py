"""Operator commands of the `digest` CLI: the state of the service and the levers on it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import click
from rich.table import Column, Table

from digest.cli.app import _state, cli, console, cut, err_console
from digest.config import SourceConfig
from digest.errors import DigestError
from digest.states import REQUEUEABLE
from digest.states import Delivery as DS
from digest.store.papers import Store
from digest.store.schema import as_utc_naive


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Today's deliveries by state, digests waiting for a retry and when, the last fetch of each
    source, and who is sent to next.

    Example: digest status
    """
    import gc

    # Over up to 100,000 readers, none of them garbage: the cyclic GC would walk them all
    # again and again as the rows are made (seconds at 100,000).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _status(ctx)
    finally:
        if was_enabled:
            gc.enable()


def _status(ctx: click.Context) -> None:
    from collections import Counter

    from digest.mail.engine import PAUSE_KEY
    from digest.packed import Scheduled
    from digest.profile_files import cache_file, load_schedules
    from digest.service.roster import held_back
    from digest.service.schedule import digest_day, slots

    st = _state(ctx)
    store = st.store()
    now = datetime.now(UTC)
    paused = store.get_control(PAUSE_KEY)
    if paused:
        console.print(
            f"[bold red]Delivery is PAUSED:[/] {paused}\n  resume: digest resume",
            highlight=False,
            markup=True,
        )
    # Only what a schedule needs of each profile, from the index the last load kept.
    readers, broken = load_schedules(
        st.cfg.subscribers_dir,
        [s.name for s in st.cfg.sources],
        cache=cache_file(st.cfg.data_dir),
    )
    # Each reader's own date, worked out once per time zone (100,000 readers share a few).
    zones: dict[str, date] = {}
    local = {
        p.email: zones.get(p.timezone) or zones.setdefault(p.timezone, digest_day(p, now))
        for p in readers
    }
    today = store.states_on(local)
    counts = Counter(
        "sent (possibly twice)" if state == DS.SENT and twice else state
        for state, twice in today.values()
    )
    dates = sorted(set(local.values())) or [now.date()]
    shown_dates = str(dates[0]) if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    console.print(
        f"today's digests ({shown_dates}, each subscriber's own date): "
        + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries"),
        highlight=False,
    )
    _listing_line(store, dates[0])
    _waiting_table(store, now)
    _feed_table(store, st.cfg.sources)
    held = held_back(store)
    active = [p for p in readers if p.email.lower() not in held]
    table = Table("next send slot (UTC)", "subscribers")

    def has_digest(p: Scheduled, day: date) -> bool:
        return day == local[p.email] and p.email.lower() in today

    for when, emails in slots(active, now, has_digest)[:10]:
        shown = ", ".join(emails[:3]) + (f" and {len(emails) - 3} more" if len(emails) > 3 else "")
        table.add_row(when.strftime("%Y-%m-%d %H:%M"), shown)
    console.print(table)
    if held:
        console.print(
            "not mailed: "
            + ", ".join(f"{n} {state}" for state, n in sorted(Counter(held.values()).items()))
            + " (digest subscribers list --state unsubscribed|disabled)",
            highlight=False,
        )
    if broken:
        err_console.print(
            f"[red]{broken} invalid profile(s):[/] run `digest subscribers check`",
            highlight=False,
            markup=True,
        )


def _listing_line(store: Store, today: date) -> None:
    """Why a day may bring no digests: arXiv makes no announcement on weekends and holidays,
    and a reader with nothing new gets no email."""
    from digest.record import NOT_LISTED

    newest = store.latest_announced(exclude_types=NOT_LISTED, until=today + timedelta(days=1))
    if newest is None:
        console.print("no listing stored yet: `digest ingest` fetches one", highlight=False)
    elif newest < today:
        console.print(
            f"no new listing since {newest:%A %-d %B %Y}: readers with nothing new since "
            "their last digest get none until the next listing",
            highlight=False,
        )


def _waiting_table(store: Store, now: datetime) -> None:
    """Digests not sent yet and when each is tried next: an operator's first question."""
    from digest.mail.engine import RELAY_KEY

    rows, total = store.waiting((DS.PENDING, DS.RETRY, DS.AMBIGUOUS), limit=10)
    if not total:
        return
    table = Table(
        Column("waiting digest", no_wrap=True),
        *("date", "state", "attempts", "next try (UTC)", "gives up", "last error"),
    )
    # The engine holds every digest while the relay's backoff lasts, queued ones included.
    relay = store.get_control(RELAY_KEY)
    held_until = as_utc_naive(datetime.fromisoformat(relay)) if relay else None
    naive_now = as_utc_naive(now)
    for d in rows:
        due = max(
            (t for t in (d.next_attempt_at and as_utc_naive(d.next_attempt_at), held_until) if t),
            default=naive_now,
        )
        next_try = "next run" if due <= naive_now else f"{due:%m-%d %H:%M}"
        table.add_row(
            d.subscriber,
            str(d.digest_date),
            d.state,
            str(d.attempts),
            next_try,
            f"{d.expire_at:%m-%d %H:%M}" if d.expire_at else "-",
            cut(d.last_error, 60),
        )
    console.print(table)
    if total > len(rows):
        console.print(f"... and {total - len(rows)} more (digest deliveries --state retry)")
    if held_until is not None and held_until > naive_now:
        console.print(
            "the relay is down or asked for a break, until "
            f"{held_until:%Y-%m-%d %H:%M} UTC; once it is back, `digest retry --state retry` "
            "makes them due and the next `digest run` (or `serve`) sends them",
            highlight=False,
        )


@cli.command()
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Digest date.")
@click.option(
    "--state",
    "state",
    # A choice, so a typo in a monitoring script is an error rather than an empty table.
    type=click.Choice([str(s) for s in DS]),
    help="Only this state.",
)
@click.pass_context
def deliveries(ctx: click.Context, day: datetime | None, state: str | None) -> None:
    """List deliveries with their state, attempts and last error.

    Example: digest deliveries --date 2026-11-23 --state retry
    """
    store = _state(ctx).store()
    table = Table(
        "id",
        "date",
        Column("subscriber", no_wrap=True),
        "state",
        "attempts",
        "papers",
        "last error",
    )
    for d in store.deliveries(day.date() if day else None):
        if state and d.state != state:
            continue
        table.add_row(
            str(d.id),
            str(d.digest_date),
            d.subscriber,
            d.state,
            str(d.attempts),
            str(len(d.paper_ids)),
            cut(d.last_error, 70),
        )
    if not table.row_count:  # a line that says so, rather than an empty table's frame
        which = (f" in state {state}" if state else "") + (f" of {day:%Y-%m-%d}" if day else "")
        console.print(f"no deliveries{which}", highlight=False)
        return
    console.print(table)


@cli.command()
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Only this digest date.")
@click.option(
    "--state",
    "states",
    multiple=True,
    default=(DS.EXPIRED, DS.DEAD),
    show_default=True,
    help="States to re-queue (repeatable; also: ambiguous, bounced; retry brings digests "
    "waiting for their next attempt forward, e.g. once the relay is back).",
)
@click.pass_context
def retry(ctx: click.Context, day: datetime | None, states: tuple[str, ...]) -> None:
    """Re-queue undelivered digests after the cause was fixed; the next run sends them.

    Example: digest retry --state expired --state dead
    """
    allowed = {*REQUEUEABLE, DS.RETRY}
    if bad := set(states) - allowed:
        raise DigestError(
            f"cannot re-queue {', '.join(sorted(bad))}", f"choose from {', '.join(sorted(allowed))}"
        )
    store, when, now = _state(ctx).store(), day.date() if day else None, datetime.now(UTC)
    if DS.RETRY in states:
        from digest.mail.engine import RELAY_KEY

        # The operator says the relay is back: the engine's relay backoff ends too.
        store.set_control(RELAY_KEY, None)
        n = store.bring_forward(when, now)
        console.print(f"{n} waiting deliver{'y' if n == 1 else 'ies'} due now.")
    rest = [s for s in states if s != DS.RETRY]
    if rest:
        n = store.requeue(rest, when, now)
        console.print(f"{n} deliver{'y' if n == 1 else 'ies'} re-queued.")
        if gone := store.unsendable(rest, when):
            console.print(
                f"{gone} left as {'it is' if gone == 1 else 'they are'}: older than "
                f"[digest] keep_days, {'its' if gone == 1 else 'their'} message is no longer "
                "stored (the web view says expired)."
            )
    console.print("`digest run` (or a running `digest serve`) sends them.")


@cli.command()
@click.option("--reason", default="paused by the operator", show_default=True)
@click.pass_context
def pause(ctx: click.Context, reason: str) -> None:
    """Stop all sending (every process) until `digest resume`; nothing is lost.

    Example: digest pause --reason "relay maintenance"
    """
    from digest.mail.engine import PAUSE_KEY

    store = _state(ctx).store()
    was = store.get_control(PAUSE_KEY)
    given = ctx.get_parameter_source("reason") is not click.core.ParameterSource.DEFAULT
    if was and not given:  # a second `digest pause` keeps the reason the first one gave
        console.print(f"delivery already paused: {was}", highlight=False)
        return
    store.set_control(PAUSE_KEY, reason)
    changed = f" (was: {was})" if was and was != reason else ""
    console.print(f"delivery paused: {reason}{changed}", highlight=False)


@cli.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Resume sending after a pause (manual or automatic); unsent digests go on the next run."""
    from digest.mail.engine import PAUSE_KEY

    store = _state(ctx).store()
    was = store.get_control(PAUSE_KEY)
    store.set_control(PAUSE_KEY, None)
    console.print(f"delivery resumed (was paused: {was})" if was else "delivery was not paused")


@cli.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Papers stored, the last fetch of each source, and deliveries by state."""
    from collections import Counter

    from digest.record import NOT_LISTED

    st = _state(ctx)
    store = st.store()
    # As runs see it: look-ups are not listings, and a future date does not count.
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    newest = store.latest_announced(exclude_types=NOT_LISTED, until=tomorrow)
    console.print(
        f"papers stored: {store.count_papers()}; newest listing: {newest or '-'}",
        highlight=False,
    )
    _feed_table(store, st.cfg.sources)
    by_day: Counter[tuple[str, str]] = Counter(
        (str(d.digest_date), d.state) for d in store.deliveries()
    )
    table = Table("digest date", "state", "deliveries")
    for (day, state), n in sorted(by_day.items()):
        table.add_row(day, state, str(n))
    console.print(table)


def _feed_table(store: Store, sources: list[SourceConfig]) -> None:
    """The last fetch of each configured source; a removed one gets a line, not a row."""
    table = Table("source", "last fetch", "status", "items", "error")
    states = store.feed_states()
    by_name = {f.source: f for f in states}
    configured = [s.name for s in sources]
    for src in sources:
        name = src.name
        f = by_name.get(name)
        if src.lookups_only:  # whatever an earlier release's fetch of it left behind
            table.add_row(name, "-", "look-ups only", "-", "")
            continue
        if f is None:  # configured, never fetched: `digest ingest` (or serve's start) does it
            table.add_row(name, "never", "-", "-", "")
            continue
        when = f.last_attempt.strftime("%Y-%m-%d %H:%M") if f.last_attempt else "-"
        table.add_row(
            f.source,
            when,
            f.last_status or "-",
            str(f.last_count),
            cut(f.last_error, 80),
        )
    console.print(table)
    if gone := [f.source for f in states if f.source not in configured]:
        console.print(
            f"no longer configured: {', '.join(gone)} (their papers stay until "
            "`digest papers purge --source NAME`)",
            highlight=False,
        )


@cli.command()
@click.argument("address")
@click.argument("paper", required=False)
@click.argument("verdict", required=False, type=click.Choice(["like", "dislike", "clear"]))
@click.pass_context
def feedback(ctx: click.Context, address: str, paper: str | None, verdict: str | None) -> None:
    """Record a reader's verdict on a paper, or list their feedback.

    The next run retrains that subscriber's model: liked papers teach it what to find, disliked
    ones what to leave out. `clear` withdraws a verdict.

    Examples: digest feedback ada@example.org 2411.01234 like;
    digest feedback ada@example.org (lists Ada's feedback)
    """
    from digest.profile_files import cache_file, load_profiles
    from digest.record import canonical_arxiv_id

    st = _state(ctx)
    store = st.store()
    loaded = load_profiles(
        st.cfg.subscribers_dir,
        [s.name for s in st.cfg.sources],
        cache=cache_file(st.cfg.data_dir),
    )
    known = {p.email.lower() for p in loaded.profiles}
    if address.lower() not in known:
        raise DigestError(
            f"no subscriber with email {address}", "`digest subscribers list` shows them"
        )
    if paper is None:
        given = store.feedback(address)
        papers = store.papers(list(given))
        table = Table("paper", "verdict", "title")
        for pid, v in given.items():
            table.add_row(pid, v, papers[pid].title if pid in papers else "(not stored)")
        console.print(table if given else f"{address} has given no feedback yet.")
        return
    if verdict is None:
        raise DigestError("say like, dislike or clear after the paper id")
    pid = canonical_arxiv_id(paper) or paper.strip()  # other feeds' ids are URLs or DOIs
    if pid not in store.papers([pid]):
        raise DigestError(f"no stored paper {pid}", "feedback is for papers already ingested")
    changed = store.set_feedback(address, pid, None if verdict == "clear" else verdict)
    what = "cleared" if verdict == "clear" else f"recorded: {verdict}"
    console.print(
        f"{address}, {pid}: {what}" + ("" if changed else " (unchanged)"), highlight=False
    )


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: [web] host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: [web] port)."
)
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the email's links: unsubscribe, more/less like this, the digest as a page.

    Logs one line per request (method, path without its token, status, time) to stderr.
    Example: digest web --port 8000 (behind a proxy that serves [web] base_url)
    """
    import logging
    import socket

    from digest.service.web_server import serve_web

    st = _state(ctx)
    st.cfg.web.secret_key()  # a missing key is one clear error now, not a 500 per click
    store = st.store()
    bind_host, bind_port = host or st.cfg.web.host, port or st.cfg.web.port
    # Bound here, before saying "serving": a port in use is one line, not a traceback.
    try:
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, bind_port))
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DigestError(
            f"cannot listen on {bind_host}:{bind_port}: {reason}",
            "choose another --port, or stop what is using it",
        ) from None
    access = logging.getLogger("digest.web.access")
    access.setLevel(logging.INFO)
    console.print(f"serving {st.cfg.web.base_url} links on http://{bind_host}:{bind_port}")
    serve_web(st.cfg, store, sock)


@cli.group()
def papers() -> None:
    """Stored papers: remove what a source brought."""


@papers.command("purge")
@click.option("--source", "source", required=True, metavar="NAME", help="Source name.")
@click.pass_context
def papers_purge(ctx: click.Context, source: str) -> None:
    """Forget the papers a source brought (e.g. one removed from digest.toml, or one that sent
    bad dates). Papers other sources also brought stay, without this source's mark.

    Example: digest papers purge --source lab-feed
    """
    from digest.ingest.backfill_lock import Busy, backfill_lock
    from digest.ingest.backfill_progress import forget_source

    st = _state(ctx)
    store = st.store()
    try:
        # Not under a running backfill: it would go on saving its progress over the papers
        # deleted here, and the next one would take them for fetched.
        with backfill_lock(st.cfg.data_dir):
            deleted, untagged = store.purge_source(source)
            # Its backfill progress too: a record saying "done back to …" over papers now
            # deleted would keep `digest ingest --backfill` from ever fetching them again.
            forgotten = forget_source(store, source)
    except Busy as busy:
        pid = f"pid {busy.pid}" if busy.pid else "another process"
        raise DigestError(
            f"a backfill is running on this site ({pid}); nothing was purged",
            "purge once it has ended",
        ) from None
    if not deleted and not untagged and not forgotten:
        raise DigestError(
            f"no stored paper came from a source named {source!r}", "see `digest stats`"
        )
    progress = (
        f"; its backfill progress forgotten ({forgotten} categor{'y' if forgotten == 1 else 'ies'})"
        if forgotten
        else ""
    )
    console.print(
        f"{source}: {deleted} paper(s) deleted, {untagged} kept (also from other sources)"
        f"{progress}",
        highlight=False,
    )
