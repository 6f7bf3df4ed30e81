"""Profiles kept packed: validated profiles as pickled chunks, unpacked when they are used.

A validated profile is a pydantic model of about 4 KB in memory; 100,000 of them took 400 MB in
a run's parent process, which holds every reader while its planners work through them batch by
batch. Pickled in chunks of `CHUNK` they take 34 MB, and a chunk unpacks in about 4 ms (with
the cyclic GC off). The profile cache on disk keeps the same chunks, so an unchanged list is
neither parsed nor unpacked until a planner needs its batch.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, overload

if TYPE_CHECKING:
    from digest.profiles import Profile

CHUNK = 256


class Timed(Protocol):
    """What a schedule reads of a reader (digest.service.schedule): a Profile, or a Scheduled."""

    @property
    def email(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def send_at(self) -> str: ...
    @property
    def send_days(self) -> str: ...


class Scheduled(NamedTuple):
    """A reader as a schedule sees them: the address, time zone, send time and send days of a
    profile. (A tuple: made 100,000 times in a `digest status`, a frozen dataclass cost a third
    of it.)"""

    email: str
    timezone: str
    send_at: str
    # The weekdays a digest may go out, as digits (0 Monday … 6 Sunday); "" every day.
    send_days: str = ""


class Packed:
    """Every accepted profile of a load, in file name order: chunks, addresses and file names."""

    def __init__(
        self,
        chunks: list[bytes],
        emails: list[str],
        names: list[str],
        directory: Path,
        schedules: list[tuple[str, str, str]],
    ):
        self.chunks, self.emails, self.names, self.directory = chunks, emails, names, directory
        self.schedules = schedules  # each profile's (time zone, send_at, send_days)
        # The chunk unpacked last: consecutive profiles come from the same chunk. One tuple,
        # replaced whole, so threads reading at once see a consistent pair.
        self._last: tuple[int, list[Profile]] = (-1, [])

    def get(self, i: int) -> Profile:
        n, profiles = self._last
        if n != i // CHUNK:
            n = i // CHUNK
            profiles = pickle.loads(self.chunks[n])
            self._last = (n, profiles)
        p = profiles[i % CHUNK]
        name = self.names[i]
        p._path = self.directory / name if name else None
        return p


class Packer:
    """Builds the chunks of a load, a profile at a time, holding at most one chunk unpacked."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        # Every example paper of the profiles added, first seen first: what a run looks up
        # and adds to its corpus, known without unpacking the profiles again.
        self.papers: dict[str, None] = {}
        self._open: list[Profile] = []

    def add(self, profile: Profile) -> None:
        self.papers.update(dict.fromkeys(profile.interests.papers))
        for topic in profile.topics:
            self.papers.update(dict.fromkeys(topic.papers))
        self.papers.update(dict.fromkeys(e.arxiv_id for e in profile.library if e.arxiv_id))
        self._open.append(profile)
        if len(self._open) == CHUNK:
            self._close()

    def done(self) -> list[bytes]:
        if self._open:
            self._close()
        return self.chunks

    def _close(self) -> None:
        # Pickled without their paths (set again when unpacked): unpickling 100,000 Path
        # objects was a third of the time of a load.
        paths = [p._path for p in self._open]
        for p in self._open:
            p._path = None
        try:
            self.chunks.append(pickle.dumps(self._open, protocol=pickle.HIGHEST_PROTOCOL))
        finally:
            for p, path in zip(self._open, paths, strict=True):
                p._path = path
        self._open = []


class Profiles(Sequence["Profile"]):
    """A sequence of profiles (all of a load, or some of them) unpacked one chunk at a time.

    Indexing and iterating give Profile objects as a list would; a slice is another view.
    `emails` are at hand without unpacking anything.
    """

    def __init__(self, packed: Packed, order: Sequence[int] | None = None):
        self._packed = packed
        self._order: Sequence[int] = range(len(packed.emails)) if order is None else order

    @classmethod
    def of(cls, profiles: list[Profile], directory: Path | None = None) -> Profiles:
        """Profiles given as objects (tests, one-off callers), packed the same way."""
        packer = Packer()
        for p in profiles:
            packer.add(p)
        names = [p.path.name if p.path else "" for p in profiles]
        parent = directory or next((p.path.parent for p in profiles if p.path), Path())
        emails = [p.email for p in profiles]
        schedules = [(p.timezone, p.send_at, p.send_days) for p in profiles]
        return cls(Packed(packer.done(), emails, names, parent, schedules))

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, i: int) -> Profile: ...
    @overload
    def __getitem__(self, i: slice) -> Profiles: ...
    def __getitem__(self, i: int | slice) -> Profile | Profiles:
        if isinstance(i, slice):
            return Profiles(self._packed, self._order[i])
        return self._packed.get(self._order[i])

    def __iter__(self) -> Iterator[Profile]:
        get = self._packed.get
        for i in self._order:
            yield get(i)

    @property
    def emails(self) -> list[str]:
        """Each profile's address as written, in order, without unpacking a profile."""
        emails = self._packed.emails
        return [emails[i] for i in self._order]

    @property
    def schedules(self) -> list[Scheduled]:
        """When each is sent, without unpacking a profile (`digest serve` works its send slots
        out of these every few minutes)."""
        emails, times = self._packed.emails, self._packed.schedules
        return [Scheduled(emails[i], *times[i]) for i in self._order]

    def only(self, wanted: set[str]) -> Profiles:
        """Those whose lower-case address is in ``wanted`` (a send slot)."""
        emails = self._packed.emails
        return Profiles(self._packed, [i for i in self._order if emails[i].lower() in wanted])
