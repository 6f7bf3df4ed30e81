"""`digest run` and `digest demo`: the daily cycle from the command line, with a progress bar
per stage and a summary by outcome (digest.service.pipeline does the work)."""

from __future__ import annotations

import email
import email.policy
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Column, Table

from digest.cli.app import (
    _state,
    cli,
    console,
    dir_option,
    err_console,
    operator_path,
    suffix_in,
)
from digest.errors import DigestError, ExitStatus

# `digest run` lists each reader up to this many; past it, only those that need a look.
ROWS = 50


@cli.command("run")
@click.option("--dry-run", is_flag=True, help="Rank and report, but send and record nothing.")
@click.option("--no-ingest", is_flag=True, help="Use the papers already stored.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    callback=suffix_in(".json", ".csv"),
    help="Write each subscriber's outcome and the time of each stage to FILE (.json or .csv).",
)
@click.pass_context
def run_cmd(ctx: click.Context, dry_run: bool, no_ingest: bool, report_path: Path | None) -> None:
    """Ingest, rank, render and send to every subscriber not yet sent today.

    Safe to repeat: a subscriber whose digest for today went out gets nothing more.
    Exit status: 0 every due digest sent; 1 error (nothing done); 2 some digest not sent, or a
    source or profile failed; 3 delivery paused. Example: digest run --dry-run
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from digest.service.pipeline import run

    st = _state(ctx)
    store = st.store()
    # A bar per stage on a terminal; nothing for cron (the summary below says it all).
    bars = Progress(
        "{task.description:<10}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        report = run(st.cfg, store, ingest=not no_ingest, dry_run=dry_run, progress=progress)
    _print_report(report)
    code = report.exit_status()
    if report_path is not None:
        from digest.service.report import write_report

        try:
            write_report(report, report_path)
        except DigestError as exc:
            # The run itself happened: its status stands, at least "needs a look".
            err_console.print(f"[red]Error:[/] {escape(exc.message)}", markup=True)
            code = max(code, ExitStatus.PARTIAL)
    ctx.exit(code)


def _print_report(report: Any) -> None:
    for r in report.ingest:
        if r.status == "error":
            err_console.print(
                f"[red]source {escape(r.source)}:[/] {escape(str(r.error))}",
                highlight=False,
                markup=True,
            )
    for e in report.profile_errors:
        err_console.print(f"[red]{escape(str(e))}[/]", highlight=False, markup=True)
    # A small list reads best as one row per reader; at scale, only the readers that need a
    # look get a row (at most ROWS of them), and everyone is in the summary and `--report`.
    from digest.states import SETTLED_OK

    shown = report.results
    if len(shown) > ROWS:
        shown = [r for r in report.results if r.status not in SETTLED_OK]
    if shown:
        table = Table(Column("subscriber", no_wrap=True), "status", "papers", "detail")
        for r in shown[:ROWS]:
            table.add_row(r.email, r.status, str(r.papers) if r.papers else "-", r.detail or "")
        console.print(table)
        if len(shown) > ROWS:
            console.print(f"... and {len(shown) - ROWS} more (all of them: --report FILE)")
    if len(report.results) > ROWS:
        counts = Counter(str(r.status) for r in report.results)
        outcome = ", ".join(f"{n:,} {status}" for status, n in counts.most_common())
        console.print(f"{len(report.results):,} subscribers: {outcome}")
    if report.stages:
        console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.stages.items()))
    engine = getattr(report, "delivery", None)
    if engine is not None:
        if engine.paused:
            err_console.print(
                f"[bold red]Delivery paused:[/] {engine.paused}\n"
                "  fix the cause, then `digest resume`",
                highlight=False,
                markup=True,
            )
        if engine.relay_until is not None:
            err_console.print(
                "[red]The relay is down or asked for a break:[/] waiting digests go out at the "
                f"first run after {engine.relay_until:%Y-%m-%d %H:%M} UTC; once it is back, "
                "`digest retry --state retry` makes them due for the next run",
                highlight=False,
                markup=True,
            )
        if engine.possible_duplicates:
            err_console.print(
                f"{engine.possible_duplicates} digest(s) possibly delivered twice: the connection "
                "was lost (or a sender died) after the message was handed over; a digest is sent "
                "again at most [delivery] ambiguous_resends times, then held",
                highlight=False,
            )


@cli.command()
@dir_option("data/demo", "Scratch directory.")
def demo(directory: Path) -> None:
    """Run the whole cycle offline: a shipped listing, the example subscriber, a local SMTP
    server storing mail in a Maildir. Prints where the message is and a text preview.

    Example: digest demo --dir /tmp/digest-demo
    """
    from digest.service.demo import messages_in, run_demo

    with console.status("running the demo (ingest, rank, render, send)..."):
        with operator_path(directory):  # a place it cannot write: one line, before anything
            directory.mkdir(parents=True, exist_ok=True)
        result = run_demo(directory)
    _print_report(result.report)
    if result.message is None:
        raise DigestError("the demo sent no message", "run with -v to see why")
    msg = email.message_from_bytes(result.message.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",))
    stored = messages_in(result.maildir)
    console.print(
        f"\n{stored} message{'s' if stored != 1 else ''} stored in the Maildir at "
        f"{result.maildir}; the example subscriber's:",
        highlight=False,
    )
    console.print(f"  {result.message}", highlight=False)
    console.print(f"  Subject: {msg['Subject']}\n  To: {msg['To']}\n", highlight=False)
    if text is not None:
        preview_lines = text.get_content().splitlines()  # type: ignore[attr-defined]
        click.echo("\n".join(preview_lines[:30]))
        if len(preview_lines) > 30:
            click.echo(f"... ({len(preview_lines) - 30} more lines)")
    config = shlex.quote(str(directory / "digest.toml"))  # pasted into a shell as it is
    console.print(
        f"\nLook around: digest --config {config} status (or deliveries, subscribers list, "
        "preview ada@example.org)",
        highlight=False,
    )
