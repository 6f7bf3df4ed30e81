"""`digest subscribers ...`: who is subscribed, in what state, and the levers on that state."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from digest.cli.app import _state, console, err_console, subscribers
from digest.errors import DigestError
from digest.profile_files import LoadResult
from digest.service.roster import STATES, Reader, find_reader, roster
from digest.service.schedule import cadence
from digest.store.papers import Store


def _profiles(ctx: click.Context) -> LoadResult:
    """The profiles as a run reads them, through the same cache: which of two files with one
    address is refused depends on which the last load knew, and check must say what run does."""
    from digest.service.context import load_site_profiles

    return load_site_profiles(_state(ctx).cfg)


def _reader(ctx: click.Context, address: str) -> tuple[Store, Reader]:
    store = _state(ctx).store()
    return store, find_reader(_profiles(ctx).profiles, store, address)


def _interests(r: Reader) -> str:
    p = r.profile
    if p is None:
        return "(no profile file)"
    if p.trending:
        return f"trending (at least {p.min_upvotes} upvotes)" if p.min_upvotes else "trending"
    i = p.interests
    parts = [
        f"{label}: {', '.join(values)}"
        for label, values in (
            ("keywords", i.keywords),
            ("authors", i.authors),
            ("categories", i.categories),
            ("exclude", i.exclude),
        )
        if values
    ]
    if i.papers:
        parts.append(f"{len(i.papers)} example{'s' if len(i.papers) > 1 else ''}")
    if p.topics:
        parts.insert(0, "topics: " + ", ".join(t.name for t in p.topics))
    if p.papers_file:
        parts.append(f"library {p.papers_file} ({len(p.library)} used)")
    if p.trending_section:
        parts.append(f"+{p.trending_section} trending")
    if p.recipients:
        parts.append(f"a list of {len(p.recipients)}")
    return "; ".join(parts) or "(no interests)"


def _state_text(r: Reader) -> str:
    if r.state == "unsubscribed" and r.since:
        return f"unsubscribed {r.since:%Y-%m-%d}"
    if r.state == "disabled":
        return f"disabled ({r.reason})" if r.reason else "disabled"
    return r.state


@subscribers.command("list")
@click.option("--state", "state", type=click.Choice(STATES), help="Only readers in this state.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="csv and json give every field in full, for scripts.",
)
@click.pass_context
def subscribers_list(ctx: click.Context, state: str | None, fmt: str) -> None:
    """Every reader: profile, interests and state (active, unsubscribed, disabled).

    Readers who unsubscribed or were disabled after their file was removed are listed too.
    Example: digest subscribers list --state unsubscribed --format csv
    """
    loaded = _profiles(ctx)
    readers = [r for r in roster(loaded.profiles, _state(ctx).store()) if state in (None, r.state)]
    if fmt == "json":
        click.echo(json.dumps([r.record() for r in readers], indent=2, ensure_ascii=False))
    elif fmt == "csv":
        records = [r.record() for r in readers]
        fields = list(Reader("", "active", None).record())
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: "; ".join(v) if isinstance(v, list) else v for k, v in rec.items()})
    else:
        # An address is never cut: the table gives way in the other columns instead.
        widest = max((len(r.email) for r in readers), default=5)
        table = Table()
        table.add_column("email", no_wrap=True, min_width=widest)
        table.add_column("name")
        table.add_column("state")
        table.add_column("send at")
        table.add_column("interests", ratio=1)
        table.add_column("file")
        for r in readers:
            p = r.profile
            table.add_row(
                r.email,
                p.display_name if p else "",
                _state_text(r),
                f"{p.send_at} {p.timezone}" + (f", {cadence(p)}" if p.send_days else "")
                if p
                else "",
                _interests(r),
                p.path.name if p and p.path else "",
            )
        # Wider than the terminal rather than cropped: the terminal wraps, and no address is cut.
        # Piped into a file or grep, a row stays on one line where it can.
        width = console.width if console.is_terminal else max(console.width, 160)
        wide = Console(width=max(width, widest + 50), markup=False)
        wide.print(table)
    for e in loaded.errors:
        err_console.print(f"[red]invalid:[/] {escape(str(e))}", highlight=False, markup=True)


@subscribers.command("check")
@click.pass_context
def subscribers_check(ctx: click.Context) -> None:
    """Validate every profile; one line per problem, exit 1 if a file is invalid.

    Also warns (without failing) about example papers arXiv does not know and categories that
    are not arXiv's, after looking them up. Example: digest subscribers check
    """
    from digest.service.checks import profile_warnings

    st = _state(ctx)
    directory = st.cfg.subscribers_dir
    loaded = _profiles(ctx)
    for e in loaded.errors:
        err_console.print(f"[red]{escape(str(e))}[/]", highlight=False, markup=True)
    # What each reference library gave (a lab list's copies share one file: said once).
    said: set[str] = set()
    for p in loaded.profiles:
        if p.library_note and str(p.path) not in said:
            said.add(str(p.path))
            line = f"note: {p.path}: papers_file: {p.library_note}"
            console.print(line, highlight=False, markup=False)
    warnings = profile_warnings(st.cfg, st.store(), loaded.profiles, datetime.now(UTC).date())
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, markup=True)
    shown = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
    console.print(
        f"{len(loaded.profiles)} valid, {len(loaded.errors)} invalid{shown} in {directory}",
        highlight=False,
    )
    if not loaded.profiles and not loaded.errors:
        raise DigestError(f"no profiles in {directory}", "copy subscribers/example.toml there")
    if loaded.errors:
        ctx.exit(1)


@subscribers.command("unsubscribe")
@click.argument("address")
@click.pass_context
def subscribers_unsubscribe(ctx: click.Context, address: str) -> None:
    """Stop mailing ADDRESS, as its unsubscribe link would; the profile file stays.

    Example: digest subscribers unsubscribe ada@example.org
    """
    store, r = _reader(ctx, address)
    if r.state == "unsubscribed":
        console.print(f"{r.email} is already unsubscribed (since {r.since:%Y-%m-%d}).")
        return
    store.set_unsubscribed(r.email)
    console.print(f"{r.email} unsubscribed; no digest goes to them until `resubscribe`.")


@subscribers.command("resubscribe")
@click.argument("address")
@click.pass_context
def subscribers_resubscribe(ctx: click.Context, address: str) -> None:
    """Mail ADDRESS again after it unsubscribed (only with the reader's consent).

    Example: digest subscribers resubscribe ada@example.org
    """
    store, r = _reader(ctx, address)
    if r.state == "active":
        console.print(f"{r.email} is already subscribed.")
        return
    if r.state != "unsubscribed":
        raise DigestError(
            f"{r.email} is {r.state}, not unsubscribed", "`digest subscribers enable` for that"
        )
    if r.profile is None:
        raise DigestError(
            f"{r.email} has no profile file", "add one in subscribers/ first, then resubscribe"
        )
    store.set_unsubscribed(r.email, False)
    console.print(f"{r.email} resubscribed; the next run sends to them again.")


@subscribers.command("enable")
@click.argument("address")
@click.pass_context
def subscribers_enable(ctx: click.Context, address: str) -> None:
    """Re-enable a subscriber disabled after repeated bounces.

    Example: digest subscribers enable ada@example.org
    """
    store, r = _reader(ctx, address)
    if not store.enable(r.email):
        raise DigestError(
            f"{r.email} is not disabled (state: {r.state})", "see `digest subscribers list`"
        )
    console.print(f"{r.email} enabled; the next run will send to them again.")
