"""The service configuration, `digest.toml`, validated once at load into typed models.

Looked up in order: the ``--config`` option, the ``DIGEST_CONFIG`` environment variable, then
``./digest.toml``. With no file at all the embedded defaults apply (SQLite in ``./data``, SMTP to
localhost:8025 without TLS), which is what `digest demo` and a first try need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from digest.errors import ConfigError
from digest.text import has_control
from digest.validation import TomlError, first_and_rest, problems, read_toml

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

SourceKind = Literal["arxiv-rss", "arxiv-api", "hf-daily", "rss"]
CONFIG_ENV = "DIGEST_CONFIG"
# A link in List-Unsubscribe must fit one header line (998 characters) with its token.
MAX_BASE_URL = 600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    # None means: a SQLite file `digest.db` in the data directory.
    url: str | None = None


class SmtpConfig(_Strict):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 8025
    security: Literal["starttls", "tls", "none"] = "none"
    username: str | None = None
    # The password never sits in this file: name an environment variable or a file holding it.
    password_env: str | None = None
    password_file: Path | None = None
    from_address: str = "digest@localhost"
    from_name: str = "Paper digest"
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    # CA certificates (PEM) to trust for a relay with a private CA; certificates are always
    # checked, against the system's CAs when this is not set.
    ca_file: Path | None = None
    # Optional DKIM signing: selector, domain (default: the From domain) and a PEM private key.
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: Path | None = None

    @field_validator("from_address")
    @classmethod
    def _address(cls, v: str) -> str:
        from digest.profiles import check_email

        return check_email(v)

    @field_validator("from_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if has_control(v):
            raise ValueError("must not contain control characters")
        return v

    def password(self) -> SecretStr | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"smtp.password_env: environment variable {self.password_env} is not set",
                    "export it before starting digest, or use smtp.password_file",
                )
            return SecretStr(value)
        if self.password_file:
            try:
                return SecretStr(self.password_file.read_text().strip())
            except OSError as exc:
                raise ConfigError(
                    f"smtp.password_file: cannot read {self.password_file}: {exc.strerror}"
                ) from exc
        return None


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """A 5-field cron expression, its weekday numbers read as cron numbers them. APScheduler
    3 counts from Monday = 0, so `1-5` there is Tuesday to Saturday; cron's numbers (0 or 7
    Sunday, 1 Monday) become day names first, which both read alike. One difference stays:
    with both a day of the month and a weekday given, cron fires on either, APScheduler on
    days that are both (the README says so)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) == 5:
        fields[4] = _cron_weekdays(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)


def _cron_weekdays(field: str) -> str:
    """Cron's weekday field with its numbers as names ("1-5" -> "mon,tue,wed,thu,fri"), part
    by part ("mon,3" -> "mon,wed"); names, and a part this does not read (an empty range
    such as "5-1"), are left for APScheduler to take or refuse."""
    parts = []
    for part in field.split(","):
        days = _cron_days(part)
        parts.append(part if days is None else ",".join(_WEEKDAYS[d] for d in days))
    return ",".join(parts)


def _cron_days(part: str) -> list[int] | None:
    """The weekdays (0 Sunday) of one numeric part of cron's weekday field, or None."""
    if not any(c.isdigit() for c in part) or any(c.isalpha() for c in part):
        return None
    span, _, step = part.partition("/")
    try:
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            low, high = (int(x) for x in span.split("-", 1))
        else:
            low = int(span)
            high = 7 if step else low
        every = int(step) if step else 1
    except ValueError:
        return None
    if not (0 <= low <= 7 and 0 <= high <= 7) or every < 1:
        return None
    days = sorted({d % 7 for d in range(low, high + 1, every)})
    return days or None


class SourceConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    kind: SourceKind
    url: str
    # arXiv options: keep only these categories (empty: everything in the feed).
    categories: list[str] = []
    include_cross_lists: bool = True
    include_replacements: bool = False
    # arxiv-api: the search used for backfill (e.g. "cat:cs.LG"); ids are looked up on demand.
    query: str | None = None
    max_results: Annotated[int, Field(ge=1, le=2000)] = 100
    timeout: Annotated[float, Field(gt=0, le=300)] = 30.0
    # The whole fetch (redirects, retries of 429/503, a body trickling in) ends by then.
    deadline: Annotated[float, Field(gt=0, le=3600)] = 180.0
    max_bytes: Annotated[int, Field(ge=1024)] = 50 * 1024 * 1024
    # When `digest serve` fetches it: a 5-field cron expression in schedule_timezone. Default:
    # arXiv-based kinds at 00:30 US Eastern on weekdays (the listing changes at midnight),
    # other feeds hourly.
    schedule: str | None = None
    schedule_timezone: str = "America/New_York"

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        # Blank is no search at all (a look-ups-only source), not a search for "  ".
        return (v.strip() or None) if v is not None else None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                cron_trigger(v, "UTC")
            except ValueError as exc:
                raise ValueError(f"not a 5-field cron expression: {exc}") from None
        return v

    def trigger(self) -> CronTrigger:
        """When `digest serve` fetches this source."""
        return cron_trigger(self.cron, self.schedule_timezone)

    @property
    def lookups_only(self) -> bool:
        """An arxiv-api source with no `query` (the one `digest init` writes): the API has
        nothing to list without a search, so it is asked only for example papers and
        backfills, never fetched as a feed."""
        return self.kind == "arxiv-api" and not self.query and not self.url.startswith("file://")

    @property
    def cron(self) -> str:
        if self.schedule:
            return self.schedule
        return "0 * * * *" if self.kind == "rss" else "30 0 * * mon-fri"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("https://") or v.startswith("http://") or v.startswith("file://")):
            raise ValueError("must start with https:// (or file:// for a local file)")
        if any(ord(c) <= 32 for c in v):
            raise ValueError("must not contain spaces or control characters")
        return v


class WebConfig(_Strict):
    # Where readers reach the links in their email (the address of `digest web`, or a proxy).
    base_url: str = "http://localhost:8000"
    # What `digest web` listens on; put a TLS-terminating proxy in front for an https base_url.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Also serve the links from inside `digest serve` (one process for everything).
    serve: bool = False
    # A request's headers must arrive within this many seconds; at most this many connections
    # are open (a new one beyond closes the oldest still waiting for its headers).
    header_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_connections: Annotated[int, Field(ge=8, le=100_000)] = 512
    secret_key_env: str | None = "DIGEST_SECRET_KEY"
    secret_key_file: Path | None = None

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("must start with https:// or http://")
        # The links go into raw header lines (List-Unsubscribe), which take only ASCII: an
        # internationalised host is written in its xn-- form, other characters %-encoded.
        if not v.isascii() or any(ord(c) <= 32 or ord(c) == 127 or c in '<>"' for c in v):
            raise ValueError("must be plain ASCII without spaces, quotes or <> (%-encode the rest)")
        if len(v) > MAX_BASE_URL:
            raise ValueError(f"must be at most {MAX_BASE_URL} characters")
        return v.rstrip("/")

    def secret_key(self) -> SecretStr:
        if self.secret_key_file is not None:
            try:
                return SecretStr(self.secret_key_file.read_text().strip())
            except OSError as exc:
                raise ConfigError(
                    f"web.secret_key_file: cannot read {self.secret_key_file}: {exc.strerror}",
                    "run `digest init` to create one",
                ) from exc
        if self.secret_key_env and os.environ.get(self.secret_key_env):
            return SecretStr(os.environ[self.secret_key_env])
        raise ConfigError(
            "web: no secret key (set web.secret_key_file, or the variable named by "
            "web.secret_key_env)",
            "run `digest init` to create one",
        )


class DigestConfig(_Strict):
    # How many days of listings a digest may draw from; papers already sent are never repeated.
    lookback_days: Annotated[int, Field(ge=1, le=30)] = 3
    # Corpus window (days) the ranker fits its vocabulary and background on.
    corpus_days: Annotated[int, Field(ge=7, le=3650)] = 90
    # Days a sent digest's message is kept (for `digest web`'s view of it); after that only
    # its delivery row stays: who got which papers, so none is ever sent twice.
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 30


class DeliveryConfig(_Strict):
    """How the delivery engine treats the SMTP relay (RELIABILITY.md sections A to C)."""

    # Concurrent SMTP connections (over all processes), and messages per connection before it
    # is reopened. With processes > 1 the connections are shared out among sending processes,
    # which coordinate only through the database (as several nodes would).
    connections: Annotated[int, Field(ge=1, le=64)] = 4
    processes: Annotated[int, Field(ge=1, le=32)] = 1
    messages_per_connection: Annotated[int, Field(ge=1, le=100_000)] = 100
    # Seconds to wait for the reply to the final dot: a slow 250 must not become a duplicate.
    data_timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0
    # Messages per second over all connections (0: no limit).
    rate_limit: Annotated[float, Field(ge=0)] = 0.0
    # Retries: exponential backoff with jitter from retry_base up to retry_max seconds,
    # until retry_window_hours after the digest was planned; then the digest expires.
    retry_base: Annotated[float, Field(gt=0)] = 60.0
    retry_max: Annotated[float, Field(gt=0)] = 3600.0
    retry_window_hours: Annotated[float, Field(gt=0, le=168)] = 20.0
    # Attempts (including ones a dead worker never finished) before a digest is `dead`.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 10
    lease_seconds: Annotated[float, Field(ge=10)] = 900.0
    # After a 421 the whole relay is left alone this long.
    relay_backoff: Annotated[float, Field(ge=0)] = 60.0
    # Hard bounces before a subscriber is disabled (`digest subscribers enable` undoes it).
    bounce_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    # Auto-pause when, among at least error_pause_min recent attempts, more than this share failed.
    error_pause_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    error_pause_min: Annotated[int, Field(ge=1)] = 20
    # A digest whose connection dropped after the message was handed over may have arrived:
    # "resend" sends it again with the same Message-ID (receivers can de-duplicate),
    # "hold" leaves it for the operator (`digest retry`).
    ambiguous: Literal["resend", "hold"] = "resend"
    # How often one digest is sent again after such a loss (or after a runner died while
    # sending it); past that it is held for the operator, never resent in a loop.
    ambiguous_resends: Annotated[int, Field(ge=0, le=10)] = 1

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> DeliveryConfig:
        # A lease that ends while the reply to the final dot is still awaited would let another
        # runner take the row and send the digest a second time.
        if self.lease_seconds <= self.data_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must exceed data_timeout "
                f"({self.data_timeout:g}), with room for the commands before it"
            )
        return self

    @property
    def resends(self) -> int:
        """Resends allowed for a digest that may have arrived (0 with `ambiguous = "hold"`)."""
        return 0 if self.ambiguous == "hold" else self.ambiguous_resends


class PlanningConfig(_Strict):
    """How `digest run` plans a large list: in this many processes (default: one per core),
    while the delivery engine already sends what is planned. A run of one batch (1,000
    readers) or fewer plans in its own process. Several nodes on one database split the
    batches between them (`lease_seconds`: when a dead node's batch is taken over)."""

    workers: Annotated[int, Field(ge=1, le=64)] | None = None
    # Subscribers planned together: one set of queries, models and scores per batch, so
    # memory stays flat however many readers (a batch's scores: batch x the listing, float32).
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Several nodes on one database claim a run's batches; a claim this old and unfinished
    # (its node died) is taken over by another node.
    lease_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0

    @property
    def processes(self) -> int:
        return self.workers or os.cpu_count() or 1


class ServeConfig(_Strict):
    """`digest serve`: how often it looks at the profiles and for digests that are due."""

    reload_seconds: Annotated[float, Field(ge=1)] = 30.0
    catch_up_seconds: Annotated[float, Field(ge=5)] = 300.0
    retry_seconds: Annotated[float, Field(ge=5)] = 60.0
    # A failed fetch is tried again after this many minutes, then twice that, ... (at most
    # `ingest_retries` times), not only at the source's next cron, often a day later.
    ingest_retry_minutes: Annotated[float, Field(gt=0, le=1440)] = 15.0
    ingest_retries: Annotated[int, Field(ge=0, le=10)] = 4


class Config(_Strict):
    data_dir: Path = Path("data")
    subscribers_dir: Path = Path("subscribers")
    templates_dir: Path | None = None
    database: DatabaseConfig = DatabaseConfig()
    smtp: SmtpConfig = SmtpConfig()
    web: WebConfig = WebConfig()
    digest: DigestConfig = DigestConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    serve: ServeConfig = ServeConfig()
    planning: PlanningConfig = PlanningConfig()
    sources: list[SourceConfig] = []
    # Where this config came from (None: embedded defaults); set by load_config.
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"two sources are named {s.name!r}; names must be unique")
            seen.add(s.name)
        return v

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'digest.db'}"

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ConfigError(f"no source named {name!r} (known: {known})")


def find_config(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    default = Path("digest.toml")
    return default if default.exists() else None


def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def load_config(explicit: Path | None = None, *, missing_ok: bool = False) -> Config:
    """Load and validate the config; raise ConfigError naming file and key on any mistake.

    With no file to be found, ``missing_ok`` gives the embedded defaults (SQLite in ./data,
    SMTP to localhost:8025); otherwise that is an error, so that a cron job started in the
    wrong folder fails loudly instead of running a fresh, empty instance there.
    """
    path = find_config(explicit)
    if path is None:
        if missing_ok:
            return Config().model_copy(update={"data_dir": Path("data").absolute()})
        here = Path.cwd() / "digest.toml"
        raise ConfigError(
            f"no digest.toml: looked for --config, ${CONFIG_ENV}, then {here}",
            "run `digest init` to create one here, or pass --config FILE",
        )
    try:
        raw = read_toml(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file", "run `digest init` to create one") from exc
    except TomlError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        key, msg = first_and_rest(problems(Config, exc))
        raise ConfigError(f"{path}: {key}: {msg}") from exc
    # Relative paths are relative to the config file, so the service runs from any directory.
    base = path.absolute().parent
    smtp = cfg.smtp.model_copy(
        update={
            "password_file": _resolve(base, cfg.smtp.password_file),
            "ca_file": _resolve(base, cfg.smtp.ca_file),
            "dkim_key_file": _resolve(base, cfg.smtp.dkim_key_file),
        }
    )
    web = cfg.web.model_copy(update={"secret_key_file": _resolve(base, cfg.web.secret_key_file)})
    sources = [
        s.model_copy(update={"url": "file://" + str(base / s.url[7:])})
        if s.url.startswith("file://") and not s.url.startswith("file:///")
        else s
        for s in cfg.sources
    ]
    loaded = cfg.model_copy(
        update={
            "data_dir": _resolve(base, cfg.data_dir),
            "subscribers_dir": _resolve(base, cfg.subscribers_dir),
            "templates_dir": _resolve(base, cfg.templates_dir),
            "smtp": smtp,
            "web": web,
            "sources": sources,
        }
    )
    loaded._path = path
    return loaded
