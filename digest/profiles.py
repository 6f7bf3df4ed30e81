"""Subscriber profiles: one TOML file per subscriber in `subscribers/`, written by people.

The program only reads these files. A broken file is reported (file, key, problem) and skipped;
every other subscriber is still served.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from digest import __version__
from digest.errors import ProfileError
from digest.packed import CHUNK, Packed, Packer, Profiles, Scheduled
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
    raise ValueError(f"{written!r} is not a weekday; use mon, tue, wed, thu, fri, sat or sun")


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
    # Several separate interests, each its own section and model (`topics_of`).
    topics: Annotated[list[Topic], Field(max_length=MAX_TOPICS)] = []
    # Set by the loader, not by the file.
    _path: Path | None = PrivateAttr(default=None)
    # A lab list's recipients, lower case, on each recipient's copy of the profile (`expand`).
    _members: tuple[str, ...] = PrivateAttr(default=())
    # On a topic's profile (`topics_of`): its place among the profile's topics.
    _topic: int | None = PrivateAttr(default=None)

    _email = field_validator("email")(classmethod(lambda cls, v: check_email(v) if v else v))

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
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
        (kept under its first recipient's address, so it is pruned with the list); a topic's
        is that followed by ":" and the topic's place (no address holds a ":")."""
        owner = self._members[0] if self._members else self.email.lower()
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
        """Every example paper the profile names, its topics' included."""
        return {*self.interests.papers, *(pid for t in self.topics for pid in t.papers)}


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


@dataclass(frozen=True)
class LoadResult:
    profiles: Profiles
    errors: list[ProfileError]
    # The example papers of every profile loaded, each once, first seen first.
    example_papers: list[str] = field(default_factory=list)


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
        key, msg = first_and_rest(problems(Profile, exc))
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
    if profile.topics:
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


def file_key(path: Path | str) -> tuple[int, int, int, int]:
    """What tells a file unchanged since it was read: inode, size, mtime and ctime (ctime too:
    nobody can set it back, as an editor or `touch -d` can the mtime)."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def cache_file(data_dir: Path) -> Path:
    """Where the last load's profiles are kept (`load_profiles`'s ``cache``)."""
    return data_dir / "models" / "profiles.pkl"


def load_profiles(
    directory: Path, known_sources: Iterable[str] | None = None, cache: Path | None = None
) -> LoadResult:
    """Every `*.toml` in ``directory``; broken files become errors, the rest load.

    With ``cache`` (a file in the data directory), a profile whose file is unchanged (same
    inode, size and modification time) is taken from the last load instead of parsed and
    validated again: 100,000 profiles took about 40 s to read on every run.
    """
    if not directory.is_dir():
        # An error, not an empty list: a misspelt subscribers_dir (or one moved away) made a
        # run that mailed nobody and exited 0, which a cron job reads as a good day.
        missing = ProfileError(
            str(directory), "", "no such directory (subscribers_dir in digest.toml)"
        )
        return LoadResult(Profiles.of([]), [missing])
    # The cyclic GC would walk every profile made so far each time it ran, hundreds of times
    # for 100,000 of them (none of them garbage): off for the load, it took half the time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_profiles(directory, known_sources, cache)
    finally:
        if was_enabled:
            gc.enable()


def _load_profiles(
    directory: Path, known_sources: Iterable[str] | None, cache: Path | None
) -> LoadResult:
    known = list(known_sources) if known_sources is not None else None
    errors: list[ProfileError] = []
    stamp = _stamp(known)
    before = _Cache.read(cache, stamp)
    # Each accepted file, a profile kept in the cache (its index there) or one parsed now,
    # packed as it comes: 100,000 parsed profiles held until the end took 400 MB, and the
    # heap they left behind was copied page by page into every forked planner.
    stream = _Stream(before, directory)
    names: list[str] = []
    emails: list[str] = []
    index: _Index = {}  # every file that parsed, for `load_schedules`
    by_email: dict[str, str] = {}
    # Names sorted as strings and stat'ed once: Path objects compared in a sort of 100,000
    # files took seconds.
    with os.scandir(directory) as it:
        listed = sorted(
            e.name for e in it if e.name.endswith(".toml") and not e.name.startswith(".")
        )
    for name in listed:
        path = directory / name
        try:
            seen = file_key(path)
            kept = before.files.get(name)
            ones: list[tuple[int | Profile, str]]
            if kept is not None and kept[0] == seen:
                ones = [(i, before.emails[i]) for i in kept[1]]
                index[name] = (seen, tuple(e for _, e in ones), *before.schedules[kept[1][0]])
            else:
                profile = load_profile(path, known)
                ones = [(one, one.email) for one in expand(profile)]
                for k, (_, email) in enumerate(ones):
                    owner = before.owner(email, name, directory)
                    if owner is not None:
                        key = f"recipients[{k}]" if profile.recipients else "email"
                        raise ProfileError(str(path), key, f"the same address as {owner}")
                emails_here = tuple(e for _, e in ones)
                index[name] = (
                    seen,
                    emails_here,
                    profile.timezone,
                    profile.send_at,
                    profile.send_days,
                )
        except ProfileError as exc:
            errors.append(exc)
            continue
        except OSError as exc:  # gone between listing and reading
            errors.append(ProfileError(str(path), "", f"cannot read: {exc}"))
            continue
        for k, (one, email) in enumerate(ones):
            key = email.lower()
            if key in by_email:
                where = f"recipients[{k}]" if len(ones) > 1 else "email"
                errors.append(
                    ProfileError(str(path), where, f"the same address as {by_email[key]}")
                )
                continue
            by_email[key] = str(path)
            stream.add(one)
            names.append(name)
            emails.append(email)
    chunks, papers = stream.done()
    schedules = [index[name][2:] for name in names]
    packed = Packed(chunks, emails, names, directory, schedules)
    if cache is not None and (chunks is not before.chunks or not index_file(cache).exists()):
        files: dict[str, tuple[tuple[int, int, int, int], list[int]]] = {}
        for i, name in enumerate(names):
            files.setdefault(name, (index[name][0], []))[1].append(i)
        _Cache(files, emails, schedules, chunks, papers).write(cache, stamp)
        _dump(index_file(cache), (stamp, index))
    return LoadResult(Profiles(packed), errors, papers)


class _Stream:
    """The chunks of a load, from the profiles accepted in file order. While they are the
    cache's own, in its order, nothing is packed; if every one is (the usual run), the cache's
    chunks are used as they are, unpacked by whichever planner needs each batch."""

    def __init__(self, before: _Cache, directory: Path) -> None:
        self.before = before
        n = len(before.emails)
        self.old = Packed(before.chunks, before.emails, [""] * n, directory, before.schedules)
        self.same = 0  # leading profiles that are the cache's, in its order
        self.packer: Packer | None = None

    def add(self, one: int | Profile) -> None:
        if self.packer is None:
            if isinstance(one, int) and one == self.same:
                self.same += 1
                return
            self._start()
        assert self.packer is not None
        self.packer.add(self.old.get(one) if isinstance(one, int) else one)

    def done(self) -> tuple[list[bytes], list[str]]:
        if self.packer is None:
            if self.same == len(self.before.emails):
                return self.before.chunks, self.before.papers
            self._start()  # the last files were removed
        assert self.packer is not None
        return self.packer.done(), list(self.packer.papers)

    def _start(self) -> None:
        """Something differs from the cache: pack from here on, the same ones first."""
        self.packer = Packer()
        for i in range(self.same):
            self.packer.add(self.old.get(i))


# Per file: what was stat'ed, the addresses (one, or a lab list's), time zone, send time and
# send days.
_Index = dict[str, tuple[tuple[int, int, int, int], tuple[str, ...], str, str, str]]


@dataclass
class _Cache:
    """The last load: per file its stat and place; per profile its address and schedule; the
    profiles themselves in packed chunks (digest.packed)."""

    # Per file: its stat and the places of its profiles (several for a lab list).
    files: dict[str, tuple[tuple[int, int, int, int], list[int]]]
    emails: list[str]
    schedules: list[tuple[str, str, str]]
    chunks: list[bytes]
    papers: list[str]  # every profile's example papers (LoadResult.example_papers)
    # Address -> the file it came from, made on the first new or edited file (see `owner`).
    _owners: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def owner(self, email: str, name: str, directory: Path) -> Path | None:
        """Another file the last load took this address from, still there and unchanged.

        A new or edited file claiming it is the mistake, whichever name sorts first: a copied
        profile saved as `a-copy.toml` must not take the reader's digest from the file they
        have had all along. (With no cache, the first file in name order keeps it.)"""
        if not self.files:
            return None
        if self._owners is None:
            self._owners = {
                self.emails[i].lower(): n for n, (_, at) in self.files.items() for i in at
            }
        other = self._owners.get(email.lower())
        if other is None or other == name:
            return None
        try:
            unchanged = file_key(directory / other) == self.files[other][0]
        except OSError:
            return None
        return directory / other if unchanged else None

    @classmethod
    def read(cls, cache: Path | None, stamp: object) -> _Cache:
        found = _read_cache(cache, stamp)
        try:
            kept = cls(**found)
            n = len(kept.emails)
            if (
                len(kept.schedules) == n
                and len(kept.chunks) == -(-n // CHUNK)
                and all(at and all(0 <= i < n for i in at) for _, at in kept.files.values())
            ):
                return kept
        except (TypeError, ValueError, AttributeError):  # made by another layout
            pass
        return cls({}, [], [], [], [])

    def write(self, cache: Path, stamp: object) -> None:
        """Written whole (a temporary file renamed) and private: it holds readers' addresses."""
        _dump(cache, (stamp, {k: v for k, v in vars(self).items() if k != "_owners"}))


# Bump when validation reads a file differently with the same schema (2: `G"unther`; 3: a
# file may hold a lab list, several profiles), so cached profiles are read again.
READING = 3


def _stamp(known: list[str] | None) -> object:
    """What a cache was made under: this release, the profile's shape and the configured
    sources. The shape too: the chunks are unpickled long after the cache is read (by each
    planner), where a profile class changed without a new release number could not be."""
    return (__version__, _shape(), READING, tuple(known) if known is not None else None)


@functools.cache
def _shape() -> str:
    schema = json.dumps(Profile.model_json_schema(), sort_keys=True)
    return hashlib.sha256(schema.encode()).hexdigest()[:16]


def _read_cache(cache: Path | None, stamp: object) -> dict[str, Any]:
    """The last load's entries (profiles, or the schedule index), if made by this release
    with the same sources; else none."""
    if cache is None:
        return {}
    try:
        with cache.open("rb") as f:
            found = pickle.load(f)
    except Exception:  # damaged in any way (a pickle can fail with many errors): read the files
        return {}
    if not (isinstance(found, tuple) and len(found) == 2 and found[0] == stamp):
        return {}
    entries = found[1]
    return entries if isinstance(entries, dict) else {}


def _dump(path: Path, value: object) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own (mode 0600) for each writer: two nodes on one site may both be
        # pid 1 in their containers.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return  # only a cache: the next run reads the files again
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError:
        pass  # as above
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it was renamed


# -- when each reader is sent, without loading every profile (`digest status`) ----------------


def index_file(cache: Path) -> Path:
    """Beside the profile cache: per file, what was stat'ed and the fields a schedule needs."""
    return cache.with_name(cache.stem + "-index.pkl")


def load_schedules(
    directory: Path, known_sources: Iterable[str] | None = None, cache: Path | None = None
) -> tuple[list[Scheduled], int]:
    """Every profile's schedule and how many files are broken, as `load_profiles` would find
    them, from the index the last load kept: only files changed since are parsed. Unpickling
    100,000 whole profiles took a second of `digest status`; these few fields take a tenth."""
    known = list(known_sources) if known_sources is not None else None
    index = _read_cache(index_file(cache), _stamp(known)) if cache is not None else {}
    if not index and cache is not None:  # a full load, which writes the index for next time
        loaded = load_profiles(directory, known, cache)
        return loaded.profiles.schedules, len(loaded.errors)
    if not directory.is_dir():
        return [], 0
    with os.scandir(directory) as it:
        names = [e.name for e in it if e.name.endswith(".toml") and e.name[0] != "."]
    names.sort()  # as `load_profiles` reads them: of two files with one address, the first
    out: list[Scheduled] = []
    broken = 0
    emails: set[str] = set()
    base = str(directory) + os.sep
    for name in names:
        try:
            kept = index.get(name)
            if kept is not None and kept[0] == file_key(base + name):
                ones = [Scheduled(e, kept[2], kept[3], kept[4]) for e in kept[1]]
            else:
                p = load_profile(directory / name, known)
                ones = [Scheduled(e.email, p.timezone, p.send_at, p.send_days) for e in expand(p)]
        except (ProfileError, OSError):
            broken += 1
            continue
        for one in ones:
            key = one.email.lower()
            if key in emails:  # as `load_profiles`: the second address is an error
                broken += 1
                continue
            emails.add(key)
            out.append(one)
    return out, broken
