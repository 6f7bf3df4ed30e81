"""The `digest` admin CLI: a thin layer over the library modules.

Each command's docstring is its help text. Errors a user can fix (DigestError) print as one line
with a hint and exit 1; `-v` adds the traceback and debug logging.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from digest import __version__
from digest.config import Config, load_config
from digest.errors import DigestError, ExitStatus
from digest.memory import one_blas_thread, return_freed_memory
from digest.store.failures import explain
from digest.store.papers import Store

FC = TypeVar("FC", bound=Callable[..., Any])


def _console(stderr: bool = False) -> Console:
    """Messages are never broken into lines by us (soft wrap: a terminal wraps them itself), and
    output read by cron or a pipe, where rich would assume 80 columns, gets room for tables."""
    # markup=False: text from feeds, profiles and the database is printed as written (a title
    # with "[/x]" or "[link=…]" is not markup); our own styled lines pass markup=True and
    # escape what they interpolate.
    out = Console(stderr=stderr, soft_wrap=True, markup=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, soft_wrap=True, markup=False, width=200)
    return out


console = _console()
err_console = _console(stderr=True)


class DigestGroup(click.Group):
    """Prints DigestError as `Error: ...` plus a hint, in one place for every command, and gives
    the exit statuses of the table in the README."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """A usage mistake (unknown option, bad value) exits 1 like every other error: click's
        own 2 would read as "ran, some digests unsent" to a cron job. Here rather than in
        `main()` so an in-process caller (click's CliRunner) sees the same statuses."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            exc.show()
            sys.exit(ExitStatus.ERROR)
        except click.Abort:
            err_console.print("Aborted.")
            sys.exit(ExitStatus.ERROR)
        # ctx.exit(code) comes back as the code; a command that returns ends with 0.
        sys.exit(status if isinstance(status, int) else ExitStatus.OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except (SQLAlchemyError, OSError) as exc:
                # Our own database or disk failing mid-command: one line, as for a DigestError.
                if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EACCES):
                    raise
                raise explain(exc, _where(ctx)) from exc
        except DigestError as exc:
            verbose = bool(ctx.obj and ctx.obj.get("verbose"))
            if verbose:
                traceback.print_exc()
            err_console.print(
                f"[bold red]Error:[/] {escape(exc.message)}", highlight=False, markup=True
            )
            if exc.hint:
                err_console.print(f"[dim]Hint: {escape(exc.hint)}[/]", highlight=False, markup=True)
            ctx.exit(1)


@contextmanager
def operator_path(path: Path) -> Iterator[None]:
    """A path the operator gave that cannot be made or written: one line naming it, not a
    traceback (a missing directory, a read-only place)."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        raise DigestError(f"cannot write {where}: {exc.strerror or exc}") from exc


def suffix_in(*suffixes: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback: a file option must end in one of ``suffixes`` (what is written
    depends on it, and a file named otherwise would hold something else than it says)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and Path(value).suffix.lower() not in suffixes:
            raise click.BadParameter(f"{value}: name it {' or '.join(suffixes)}")
        return value

    return check


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (CliRunner swaps it per call)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _log_to_stderr(level: int) -> None:
    """One handler on the root logger, so the libraries' warnings (alembic, apscheduler) show
    too. Unlike logging.basicConfig it is set again on each call, so several commands in one
    process (tests, a Python caller) each get their own level."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


class State:
    def __init__(self, config_path: Path | None, verbose: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._cfg: Config | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = load_config(self.config_path)
        return self._cfg

    def store(self) -> Store:
        store = Store(self.cfg.database_url)
        store.open()
        return store


def cut(text: str | None, width: int) -> str:
    """A long value for a table cell, visibly shortened."""
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _where(ctx: click.Context) -> str:
    """The database a failing command was using (password masked), for its error line."""
    obj = ctx.find_object(dict)
    state: State | None = obj.get("state") if obj else None
    if state is None or state._cfg is None:
        return "(the configured database)"
    return state._cfg.database_url.split("@")[-1]


def _state(ctx: click.Context) -> State:
    obj = ctx.find_object(dict)
    assert obj is not None
    return obj["state"]  # type: ignore[no-any-return]


@click.group(cls=DigestGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Service config (default: $DIGEST_CONFIG, then ./digest.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and full tracebacks.")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """digest: a personalised daily digest of new research papers, by email.

    Start with `digest demo` to see the whole cycle offline, or `digest init` to set up a
    real instance.
    """
    _log_to_stderr(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = {"verbose": verbose, "state": State(config_path, verbose)}


def dir_option(default: str, help_text: str) -> Callable[[FC], FC]:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path(default),
        show_default=True,
        help=help_text,
    )


def backfill_option(help_text: str) -> Callable[[FC], FC]:
    return click.option(
        "--backfill",
        "backfill_days",
        type=click.IntRange(1, 3650),
        metavar="DAYS",
        help=help_text,
    )


@cli.command()
@dir_option(".", "Where to create the files.")
@click.option("--force", is_flag=True, help="Overwrite digest.toml and the example profile.")
@backfill_option("Then fetch the last DAYS days of the sources' categories as corpus.")
@click.pass_context
def init(ctx: click.Context, directory: Path, force: bool, backfill_days: int | None) -> None:
    """Create digest.toml, subscribers/example.toml, a secret key and the database.

    With --backfill DAYS, then fetch the last DAYS days of papers of the arXiv sources'
    categories (as `digest ingest --backfill DAYS` does), so the ranker learns its vocabulary
    from them rather than from the first listings alone.
    Example: digest init --dir /srv/digest --backfill 90
    """
    from digest.service.workspace import init_workspace

    with operator_path(directory):
        lines = init_workspace(directory, force)
    for line in lines:
        console.print(line, highlight=False)
    cfg = load_config(directory / "digest.toml")
    store = Store(cfg.database_url)
    store.open()
    console.print(f"database ready: {store.safe_url}", highlight=False)
    here = Path.cwd().resolve() == directory.resolve()
    cd = "" if here else f"cd {shlex.quote(str(directory))} && "
    days = backfill_days or cfg.digest.corpus_days
    again = f"{cd}digest ingest --backfill {days}"
    if backfill_days is None:
        console.print(
            f"To rank with a vocabulary of the last {days} days of papers rather than of the "
            f"first listings alone: `{again}` (minutes: arXiv asks for 3 s between requests).",
            highlight=False,
        )
    console.print(
        f"Next: edit digest.toml and subscribers/, then `{cd}digest subscribers check`.",
        highlight=False,
    )
    if backfill_days is None:
        return
    from digest.cli.backfill import run_backfill

    status = run_backfill(cfg, store, backfill_days, None, again)
    if status != ExitStatus.OK:
        ctx.exit(status)


@cli.command()
@click.option("--source", "source", metavar="NAME", help="Only this source.")
@backfill_option("Instead of the listings: the last DAYS days of the arXiv sources' categories.")
@click.pass_context
def ingest(ctx: click.Context, source: str | None, backfill_days: int | None) -> None:
    """Fetch the configured sources and store their new papers.

    With --backfill DAYS, instead: fetch the papers submitted in the last DAYS days in each
    `categories` entry of the arxiv-rss sources, through the arXiv API, as the ranker's corpus
    (never listed in a digest); run again, it continues where it stopped.

    Exit status: 0 every source (every backfilled category) fetched; 2 some failed (named in
    the table, or in a backfill's closing lines), or a backfill was interrupted (Ctrl-C,
    SIGTERM) or left results to fetch next time; 1 error, or a backfill already running.

    Examples: digest ingest --source arxiv; digest ingest --backfill 90
    """
    from digest.ingest.run import ingest_all
    from digest.service.context import refresh_apart

    st = _state(ctx)
    store = st.store()
    if backfill_days is not None:
        from digest.cli.backfill import run_backfill

        where = ["--config", str(st.config_path)] if st.config_path else []
        only = ["--source", source] if source else []
        again = shlex.join(["digest", *where, "ingest", "--backfill", str(backfill_days), *only])
        outcome = run_backfill(st.cfg, store, backfill_days, source, again)
        if outcome != ExitStatus.OK:
            ctx.exit(outcome)
        return
    with console.status("ingesting..."):
        reports = ingest_all(store, st.cfg, only=source)
    table = Table("source", "status", "entries", "added", "updated", "skipped", "problems")
    for r in reports:
        skipped = ", ".join(f"{v} {k}" for k, v in sorted(r.skipped.items())) or "-"
        status = Text("error", style="red") if r.status == "error" else r.status
        table.add_row(
            r.source,
            status,
            str(r.entries),
            str(r.added),
            str(r.updated),
            skipped,
            r.error or ("; ".join(r.problems[:2]) if r.problems else "-"),
        )
    console.print(table)
    if any(r.added for r in reports):
        # Fitted now rather than inside the next run: see refresh_vocabulary. No spinner: its
        # thread may hold the console's lock at the fork, and the child would then wait on it
        # for ever to log a line.
        if console.is_terminal:
            console.print("[dim]fitting the vocabulary...[/]", highlight=False)
        problem = refresh_apart(st.cfg, store, datetime.now(UTC).date())
        if problem:
            err_console.print(f"[yellow]{escape(problem)}[/]", highlight=False, markup=True)
    failed = [r.source for r in reports if r.status == "error"]
    if failed:
        what = (
            "every source"
            if len(failed) == len(reports)
            else f"{len(failed)} of {len(reports)} sources"
        )
        err_console.print(
            f"[red]{what} failed:[/] {escape(', '.join(failed))}", highlight=False, markup=True
        )
        ctx.exit(ExitStatus.PARTIAL)


@cli.group()
def subscribers() -> None:
    """List, check, unsubscribe and re-enable subscribers (subscribers/*.toml)."""


@cli.command()
@click.argument("address")
@click.option("--text", "as_text", is_flag=True, help="Print the plain-text part.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    callback=suffix_in(".eml", ".html", ".htm", ".txt"),
    help="Write the message: .eml for the whole message, .html or .txt for one part.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML part in a browser.")
@click.option(
    "--next",
    "next_digest",
    is_flag=True,
    help="Once today's digest exists: the next one, as a run would make it now (after feedback).",
)
@click.pass_context
def preview(
    ctx: click.Context,
    address: str,
    as_text: bool,
    out: Path | None,
    open_browser: bool,
    next_digest: bool,
) -> None:
    """Show what ADDRESS would get now, without sending or recording anything.

    Once today's digest exists, this is that digest, as stored; `--next` shows the next one.
    Example: digest preview ada@example.org --out /tmp/digest.html
    """
    from digest.service.pipeline import preview as build_preview

    st = _state(ctx)
    shown = build_preview(st.cfg, st.store(), address, next_digest=next_digest)
    rendered = shown.rendered
    # On stderr: `--text` output piped into a file stays the message alone.
    if shown.stored is not None:
        d = shown.stored
        when = f" at {d.sent_at:%Y-%m-%d %H:%M} UTC" if d.sent_at else ""
        what = f"sent{when}" if d.state == "sent" else f"not sent yet ({d.state})"
        err_console.print(
            f"[yellow]The digest of {d.digest_date} was {what}[/]; this is it as stored. "
            "`--next` shows the next one as it would be now.",
            highlight=False,
            markup=True,
        )
    elif next_digest:
        err_console.print(
            f"The next digest ({shown.day}) as a run would make it now, with the feedback so far.",
            highlight=False,
        )
    if shown.note:
        err_console.print(f"[yellow]{escape(shown.note)}[/]", highlight=False, markup=True)
    if open_browser:
        _open_in_browser(rendered.html, st.cfg.data_dir)
    if out is not None:
        suffix = out.suffix.lower()
        with operator_path(out):
            if suffix == ".eml":
                out.write_bytes(shown.message)
            else:
                out.write_text(rendered.html if suffix in (".html", ".htm") else rendered.text)
        console.print(f"wrote {out}", highlight=False)
    if as_text:
        click.echo(rendered.text)
    elif out is None:
        console.print(f"[bold]Subject:[/] {escape(rendered.subject)}", highlight=False, markup=True)
        from digest.text import plain_latex

        # Titles and reasons come from feeds: escaped, or "[/x]" in a title would be markup.
        for i, p in enumerate(shown.picks, 1):
            title, reason = escape(plain_latex(p.paper.title)), escape(p.reason)
            console.print(f"{i:2}. {title}\n    [dim]{reason}[/]", highlight=False, markup=True)


def _open_in_browser(html: str, data_dir: Path) -> None:
    import webbrowser

    # A file of our own in the data directory: the preview may name the subscriber.
    path = data_dir / "preview.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    try:
        opened = webbrowser.open(path.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if opened:
        console.print(f"opened {path} in a browser", highlight=False)
    else:
        console.print(f"no browser available here; the HTML is in {path}", highlight=False)


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the service: ingest on schedule, send each subscriber's digest at their send_at.

    Logs one line per event to stderr. Stop with SIGTERM or Ctrl-C: sends in flight finish
    and are recorded. Example: digest serve
    """
    from digest.service.serve import serve_forever

    st = _state(ctx)
    if not st.verbose:
        logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    st.cfg.web.secret_key()  # fail now, not at the first send slot
    serve_forever(st.cfg, st.store())


def main() -> None:
    """The `digest` command."""
    # Files digest makes (database, models, previews, the key) hold readers' addresses and
    # secrets: private to the user running it, as the systemd unit's UMask=0077 also says.
    os.umask(0o077)
    return_freed_memory()
    one_blas_thread()
    cli.main(prog_name="digest")
