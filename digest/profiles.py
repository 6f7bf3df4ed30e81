"""Subscriber profiles: one TOML file per subscriber in `subscribers/`, written by people.

The program only reads these files. A broken file is reported (file, key, problem) and skipped;
every other subscriber is still served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from digest.errors import ProfileError
from digest.library import LibraryEntry, LibraryError, read_library
from digest.record import canonical_arxiv_id
from digest.text import has_control
from digest.validation import TomlError, first_and_rest, problems, read_toml

# A double quote before a letter or brace with no backslash before it (see `_lost_backslash`).
_LOST_UMLAUT = re.compile(r'(?<!\\)"(?=[A-Za-z{])')
# Deliberately plain: a local part and a dotted domain, nothing that could break a header.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day_number(written: str) -> int:
    """A weekday as people write it ("mon", "Monday", "MON") as 0 (Monday) to 6 (Sunday)."""
    low = written.strip().lower()
    for n, day in enumerate(DAYS):
        if low in (day, _FULL_DAYS[n]):
            return n
    raise ValueError("not a weekday; use mon, tue, wed, thu, fri, sat or sun")


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def check_email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("must be a plain address like ada@example.org")
    if "=?" in value:
        # Legal characters, but an RFC 2047 encoded-word: a mail parser may decode it into a
        # line break and a header of its own (`=?utf-8?q?=0d=0aBcc=3A...?=@example.org`).
        raise ValueError("must not contain an encoded-word (=?...?=)")
    return value


def _no_controls(value: str) -> str:
    if has_control(value):
        raise ValueError("must not contain control characters (line breaks, tabs, ...)")
    return value


class Interests(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    exclude: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    authors: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    categories: list[Annotated[str, Field(pattern=r"^[a-z-]+(\.[A-Za-z-]+)?$")]] = []
    papers: list[str] = []

    @field_validator("papers")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        out = []
        for written in v:
            pid = canonical_arxiv_id(written)
            if pid is None:
                raise ValueError(f"{written.strip()!r} is not an arXiv id (like 2411.17700)")
            out.append(pid)
        return out

    @field_validator("keywords", "exclude", "authors")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out = []
        for s in v:
            s = _no_controls(s.strip())
            # Matching is by whole words: an entry of only spaces or punctuation ("", ".")
            # would match nearly every paper, which under `exclude` drops the whole digest.
            if not any(c.isalnum() for c in s):
                raise ValueError(f"{s!r} has no letter or digit to match")
            out.append(s)
        return out

    @field_validator("authors")
    @classmethod
    def _lost_backslash(cls, v: list[str]) -> list[str]:
        # arXiv's `G\"unther` pasted into a double-quoted TOML string reads as `G"unther`:
        # TOML took the backslash for its own escape. A quote right before a letter in a name
        # is that umlaut, so the backslash is put back for the name to match and read right.
        return [_LOST_UMLAUT.sub(r'\\"', s) for s in v]


class Topic(Interests):
    """One of several separate interests in one digest: a section of its own, a model of its
    own. The profile's own `exclude` applies to every topic too."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    max_papers: Annotated[int, Field(ge=1, le=50)] = 5

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = _no_controls(v.strip())
        if not v:
            raise ValueError("must not be empty")
        return v


# Topics one profile may hold.
MAX_TOPICS = 10


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where the digest goes; a lab list gives `recipients` instead (one of the two is required).
    email: str = ""
    name: Annotated[str, Field(max_length=200)] = ""
    # A lab list: one ranked digest, sent to each of these addresses as a digest of its own
    # (its own unsubscribe link and delivery row); everyone's feedback trains the one model.
    recipients: Annotated[list[str], Field(max_length=200)] = []
    timezone: str = "UTC"
    send_at: str = "07:00"
    max_papers: Annotated[int, Field(ge=1, le=50)] = 10
    # A paper with no explicit match (keyword, author, category) must rank above this share
    # of recent papers for this subscriber: 0.9 = their top 10%.
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    # How much Hugging Face upvotes count against the subscriber's own model (0 = not at all).
    trending_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # "trending": the day's most upvoted Hugging Face papers, best first, and nothing personal
    # (the Hugging Face daily email). `trending_weight = 1` with no interests means the same.
    mode: Literal["personal", "trending"] = "personal"
    # Trending papers with fewer upvotes are left out; on a quiet day nothing is sent.
    min_upvotes: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    # A personal digest can end with this many of the day's most upvoted Hugging Face papers,
    # in a section of their own, never repeating a personal pick.
    trending_section: Annotated[int, Field(ge=0, le=20)] = 0
    sources: list[str] | None = None
    # "daily": a digest on each send day with new papers; "weekly": one on `weekday`, ranking
    # everything that arrived since the last one.
    frequency: Literal["daily", "weekly"] = "daily"
    weekday: str | None = None  # weekly: the day (default Monday)
    days: list[str] | None = None  # daily: only on these days
    interests: Interests = Interests()
    # A reference library (BibTeX, RIS or CSL-JSON) beside the profile: its papers are examples.
    papers_file: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    # Several separate interests, each its own section and model (`topics_of`).
    topics: Annotated[list[Topic], Field(max_length=MAX_TOPICS)] = []
    # Set by the loader, not by the file.
    _path: Path | None = PrivateAttr(default=None)
    # A lab list's recipients, lower case, on each recipient's copy of the profile (`expand`).
    _members: tuple[str, ...] = PrivateAttr(default=())
    # On a topic's profile (`topics_of`): its place among the profile's topics.
    _topic: int | None = PrivateAttr(default=None)
    # Read from `papers_file` by the loader: the entries used as examples, the file, and what
    # `digest subscribers check` says of it.
    _library: tuple[LibraryEntry, ...] = PrivateAttr(default=())
    _library_file: Path | None = PrivateAttr(default=None)
    _library_note: str = PrivateAttr(default="")

    _email = field_validator("email")(classmethod(lambda cls, v: check_email(v) if v else v))

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("an empty list: name at least one address, or give `email`")
        seen: set[str] = set()
        for i, address in enumerate(v):
            try:
                check_email(address)
            except ValueError as exc:
                raise ValueError(f"[{i}] {address!r}: {exc}") from None
            if address.lower() in seen:
                raise ValueError(f"[{i}] {address!r} is in the list twice")
            seen.add(address.lower())
        return v

    _name = field_validator("name")(classmethod(lambda cls, v: _no_controls(v)))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "unknown time zone; use an IANA name such as Europe/Berlin or America/New_York"
            ) from None
        return v

    @field_validator("frequency", mode="before")
    @classmethod
    def _frequency(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("topics", mode="before")
    @classmethod
    def _topic_tables(cls, v: object) -> object:
        if isinstance(v, dict):
            raise ValueError("write each topic as a [[topics]] table, with two brackets")
        return v

    @field_validator("weekday")
    @classmethod
    def _weekday(cls, v: str | None) -> str | None:
        return None if v is None else DAYS[_day_number(v)]

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError('must name at least one day, like ["mon", "thu"]')
        return [DAYS[n] for n in sorted({_day_number(d) for d in v})]

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, v: str) -> str:
        if not re.fullmatch(r"\d{1,2}:\d{2}", v):
            raise ValueError("must be HH:MM in 24-hour local time, like 07:30")
        hh, mm = (int(x) for x in v.split(":"))
        if hh > 23 or mm > 59:
            raise ValueError("must be HH:MM in 24-hour local time, like 07:30")
        return f"{hh:02d}:{mm:02d}"

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def trending(self) -> bool:
        """Only the most upvoted papers, no personal ranking."""
        i = self.interests
        has_interests = bool(i.keywords or i.authors or i.categories or i.papers or self.topics)
        return self.mode == "trending" or (self.trending_weight >= 1.0 and not has_interests)

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@", 1)[0]

    @property
    def send_days(self) -> str:
        """The weekdays a digest may go out, as digits (0 Monday … 6 Sunday); "" every day."""
        if self.frequency == "weekly":
            return str(DAYS.index(self.weekday or "mon"))
        if self.days is None or len(self.days) == 7:
            return ""
        return "".join(str(DAYS.index(d)) for d in self.days)

    @property
    def model_key(self) -> str:
        """Whose model ranks this reader's digest: their own, or for a lab list the list's
        (kept under its first recipient's address and ":list", so it is pruned with the list);
        a topic's is that followed by ":" and the topic's place (no address holds a ":")."""
        # A list's is its first address followed by ":list": never a reader's own model.
        owner = f"{self._members[0]}:list" if self._members else self.email.lower()
        return owner if self._topic is None else f"{owner}:{self._topic}"

    @property
    def section(self) -> str:
        """The email section a topic's picks go in ("topic:" and its name); "" otherwise."""
        return f"topic:{self.topics[0].name}" if self._topic is not None else ""

    @property
    def members(self) -> tuple[str, ...]:
        """The addresses whose feedback trains this reader's model: theirs, or the list's."""
        return self._members or (self.email.lower(),)

    @property
    def own_papers(self) -> set[str]:
        """Every example paper the profile names, its topics' and its library's included."""
        mine = {*self.interests.papers, *(pid for t in self.topics for pid in t.papers)}
        return mine | {e.arxiv_id for e in self._library if e.arxiv_id}

    @property
    def library(self) -> tuple[LibraryEntry, ...]:
        """The `papers_file` entries used as examples (at most `MAX_LIBRARY`)."""
        return self._library

    @property
    def library_note(self) -> str:
        """How many of the `papers_file` entries were usable, and why the others were not."""
        return self._library_note


def topics_of(profile: Profile) -> list[Profile]:
    """A profile per topic, each ranked with its own model: the topic's interests (with the
    profile's excludes) and its `max_papers`. A topic's profile keeps that one topic in
    `topics`, for its name. A profile without topics is its own one."""
    if not profile.topics or profile._topic is not None:
        return [profile]
    out = []
    for n, topic in enumerate(profile.topics):
        interests = Interests(
            keywords=topic.keywords,
            exclude=list(dict.fromkeys([*profile.interests.exclude, *topic.exclude])),
            authors=topic.authors,
            categories=topic.categories,
            papers=topic.papers,
        )
        one = profile.model_copy(
            update={"interests": interests, "max_papers": topic.max_papers, "topics": [topic]}
        )
        one._topic = n
        out.append(one)
    return out


def expand(profile: Profile) -> list[Profile]:
    """A profile per address: itself, or for a lab list a copy per recipient."""
    if not profile.recipients:
        return [profile]
    members = tuple(r.lower() for r in profile.recipients)
    copies = []
    for address in profile.recipients:
        one = profile.model_copy(update={"email": address})
        one._members = members
        copies.append(one)
    return copies


def load_profile(path: Path, known_sources: Iterable[str] | None = None) -> Profile:
    """Load one profile file; raise ProfileError naming the file and the key of the first
    mistake (the message holds every mistake)."""
    shown = str(path)
    try:
        raw = read_toml(path)
    except TomlError as exc:
        raise ProfileError(shown, "", str(exc)) from exc
    except OSError as exc:  # gone since it was listed
        raise ProfileError(shown, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        found = problems(Profile, exc)
        for i, (key, msg) in enumerate(found):
            # A key appended at the end of the file lands in the last table ([interests]).
            last = key.rsplit(".", 1)[-1]
            tabled = key.startswith("interests.") or (
                key.startswith("topics[") and last not in Topic.model_fields
            )
            if tabled and last in Profile.model_fields:
                table = "[interests]" if key.startswith("interests.") else "[[topics]]"
                found[i] = (key, f"{msg}; `{last}` belongs above {table}, with `email`")
        key, msg = first_and_rest(found)
        raise ProfileError(shown, key, msg) from exc
    if bool(profile.email) == bool(profile.recipients):
        # Checked here rather than by the model, so the line names a key.
        key = "email" if not profile.email else "recipients"
        why = (
            "required key is missing (or `recipients` for a lab list)"
            if not profile.email
            else "give `email` or `recipients`, not both (put the address in the list)"
        )
        raise ProfileError(shown, key, why)
    if profile.papers_file is not None:
        if profile.topics:
            raise ProfileError(shown, "papers_file", "not with [[topics]]: give each its papers")
        _read_library(profile, path)
    if profile.trending_section and profile.trending:
        raise ProfileError(
            shown, "trending_section", 'not with mode = "trending": that digest is all trending'
        )
    if profile.topics and profile.trending:
        raise ProfileError(shown, "topics", 'not with mode = "trending", which ranks nothing')
    if profile.topics:
        for n, topic in enumerate(profile.topics):
            if not (topic.keywords or topic.papers or topic.authors or topic.categories):
                raise ProfileError(
                    shown, f"topics[{n}]", "give it keywords, papers, authors or categories"
                )
        names: dict[str, int] = {}
        for n, topic in enumerate(profile.topics):
            if topic.name.lower() in names:
                raise ProfileError(
                    shown,
                    f"topics[{n}].name",
                    f"{topic.name!r} is the name of topics[{names[topic.name.lower()]}] too",
                )
            names[topic.name.lower()] = n
        top = profile.interests
        for key in ("keywords", "authors", "categories", "papers"):
            if getattr(top, key):
                raise ProfileError(
                    shown,
                    f"interests.{key}",
                    f"with [[topics]], put {key} in a topic (only `exclude` applies to all)",
                )
    if profile.frequency == "weekly" and profile.days is not None:
        raise ProfileError(
            shown,
            "days",
            'with frequency = "weekly" give one `weekday`; `days` is for a daily digest on '
            "some days only",
        )
    if profile.frequency == "daily" and profile.weekday is not None:
        raise ProfileError(
            shown,
            "weekday",
            'only with frequency = "weekly"; for a daily digest on some days use days = [...]',
        )
    if known_sources is not None and profile.sources is not None:
        known = set(known_sources)
        for i, name in enumerate(profile.sources):
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none configured"
                raise ProfileError(shown, f"sources[{i}]", f"no source named {name!r} ({allowed})")
    profile._path = path
    return profile


# Library entries one profile trains on: a few hundred say all a centroid can; thousands would
# be looked up on arXiv's API for nothing.
MAX_LIBRARY = 200
# Entries with an abstract or an arXiv id that make title-only entries unneeded.
RICH_ENOUGH = 5
LIBRARY_SUFFIXES = (".bib", ".bibtex", ".ris", ".json", ".csljson")


def _read_library(profile: Profile, path: Path) -> None:
    """Read the profile's `papers_file` into it, or raise ProfileError naming the key.

    The file must sit in the profile's own directory (or below it): a profile is written by a
    reader, and `papers_file = "../data/secret_key"` must not make the service read (and
    report on) the operator's files."""
    written = profile.papers_file or ""
    shown = str(path)
    home = path.parent.resolve()
    target = (path.parent / written).resolve()
    if Path(written).is_absolute() or not target.is_relative_to(home):
        raise ProfileError(shown, "papers_file", f"{written!r} must be a file beside the profile")
    if target.suffix.lower() not in LIBRARY_SUFFIXES:
        raise ProfileError(
            shown, "papers_file", f"{written!r}: export the library as .bib, .ris or .json"
        )
    if not target.is_file():  # also refuses a FIFO, which a read would wait on for ever
        raise ProfileError(shown, "papers_file", f"{written!r}: no such file")
    try:
        library = read_library(target)
    except LibraryError as exc:
        raise ProfileError(shown, "papers_file", f"{written!r}: {exc}") from exc
    entries = library.entries
    # A title alone ("Deep Learning", a 1926 classic) says little and, being short, lands
    # close to many papers: such entries count only where the library has few others.
    rich = [e for e in entries if e.arxiv_id or e.abstract]
    bare = len(entries) - len(rich)
    if bare and len(rich) >= RICH_ENOUGH:
        entries = rich
    used = tuple(entries[:MAX_LIBRARY])
    with_id = sum(1 for e in used if e.arxiv_id)
    note = (
        f"{written}: {len(library.entries)} of {library.total} entries usable "
        f"({sum(1 for e in library.entries if e.arxiv_id)} with an arXiv id, the rest by "
        "title and abstract)"
    )
    if entries is rich and bare:
        note += f"; {bare} with a title alone left out (the others say more)"
    note += f"; {min(len(entries), MAX_LIBRARY)} used"
    if len(entries) > MAX_LIBRARY:
        note += f" (the first {MAX_LIBRARY}, {with_id} with an arXiv id)"
    if library.skipped:
        note += f"; not used: {'; '.join(library.skipped[:5])}"
        if len(library.skipped) > 5:
            note += f" (and {len(library.skipped) - 5} more)"
    # Shown on the operator's terminal: no control character from the file (or its name).
    note = re.sub(r"[\x00-\x1f\x7f-\x9f]", "", note)
    profile._library, profile._library_file, profile._library_note = used, target, note
