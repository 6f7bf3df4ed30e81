"""Loading the profiles of a directory: every `*.toml` in `subscribers/`, each checked by
digest.profiles, broken files reported and skipped, the rest packed (digest.packed) and kept in a
cache in the data directory so that an unchanged file is not parsed again; and the schedule
index `digest status` reads without loading every profile.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digest import __version__
from digest.errors import ProfileError
from digest.packed import CHUNK, Packed, Packer, Profiles, Scheduled
from digest.profiles import Profile, expand, load_profile


@dataclass(frozen=True)
class LoadResult:
    profiles: Profiles
    errors: list[ProfileError]
    # The example papers of every profile loaded, each once, first seen first.
    example_papers: list[str] = field(default_factory=list)


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
    libraries: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
    # Names sorted as strings and stat'ed once: Path objects compared in a sort of 100,000
    # files took seconds.
    with os.scandir(directory) as it:
        listed = sorted(
            e.name for e in it if e.name.endswith(".toml") and not e.name.startswith(".")
        )
    partial: set[str] = set()  # files with an address refused: read again next time
    # Address -> (file, place among the profiles, whether the file is a list of addresses).
    holder: dict[str, tuple[str, int, bool]] = {}
    dropped: set[int] = set()  # places of profiles taken back from an earlier file
    for name in listed:
        path = directory / name
        try:
            seen = file_key(path)
            kept = before.files.get(name)
            # Each profile of the file (several for a lab list), with its place in the file.
            ones: list[tuple[int, int | Profile, str]]
            if kept is not None and before.unchanged(name, seen):
                ones = [(k, i, before.emails[i]) for k, i in enumerate(kept[1])]
                if name in before.libraries:
                    libraries[name] = before.libraries[name]
                index[name] = (seen, tuple(e for *_, e in ones), *before.schedules[kept[1][0]])
            else:
                profile = load_profile(path, known)
                if profile._library_file is not None:
                    lib = profile._library_file
                    libraries[name] = (str(lib), file_key(lib))
                ones = [(k, one, one.email) for k, one in enumerate(expand(profile))]
                index[name] = (
                    seen,
                    tuple(e for *_, e in ones),
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
        is_list = len(ones) > 1
        for k, one, email in ones:
            key = email.lower()
            held = holder.get(key)
            if held is not None:
                other, at, other_list = held
                if not _takes_over(before.holder(key), name, is_list, other, other_list):
                    where = f"recipients[{k}]" if is_list else "email"
                    errors.append(
                        ProfileError(str(path), where, f"the same address as {directory / other}")
                    )
                    partial.add(name)
                    continue
                # This file keeps the address: the earlier one's profile is taken back.
                dropped.add(at)
                place = index[other][1].index(emails[at])
                where = f"recipients[{place}]" if other_list else "email"
                errors.append(
                    ProfileError(str(directory / other), where, f"the same address as {path}")
                )
                partial.add(other)
            holder[key] = (name, len(names), is_list)
            stream.add(one)
            names.append(name)
            emails.append(email)
    chunks, papers = stream.done()
    schedules = [index[name][2:] for name in names]
    packed = Packed(chunks, emails, names, directory, schedules)
    order = [i for i in range(len(names)) if i not in dropped] if dropped else None
    if cache is not None and (chunks is not before.chunks or not index_file(cache).exists()):
        files: dict[str, tuple[tuple[int, int, int, int], list[int]]] = {}
        for i, name in enumerate(names):
            if name not in partial:  # else its refused address would go unreported (a
                # file's profiles taken back stay in the chunks, unreferenced)
                files.setdefault(name, (index[name][0], []))[1].append(i)
        _Cache(files, emails, schedules, chunks, papers, libraries).write(cache, stamp)
        _dump(index_file(cache), (stamp, index))
    return LoadResult(Profiles(packed, order), errors, papers)


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
    # Per profile file with a `papers_file`: that file and its stat, which must be unchanged too.
    libraries: dict[str, tuple[str, tuple[int, int, int, int]]] = field(default_factory=dict)
    # Address -> the file it came from, made on the first new or edited file (see `owner`).
    _owners: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def unchanged(self, name: str, seen: tuple[int, int, int, int]) -> bool:
        """Whether the profile file, and its library if it has one, are as the cache read them."""
        kept = self.files.get(name)
        if kept is None or kept[0] != seen:
            return False
        library = self.libraries.get(name)
        try:
            return library is None or file_key(library[0]) == library[1]
        except OSError:
            return False

    def holder(self, email: str) -> str | None:
        """The file the last load took this address from (changed since or not)."""
        if self._owners is None:
            self._owners = {
                self.emails[i].lower(): n for n, (_, at) in self.files.items() for i in at
            }
        return self._owners.get(email.lower())

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


def _takes_over(prior: str | None, name: str, is_list: bool, other: str, other_list: bool) -> bool:
    """Whether file ``name`` takes an address from ``other``, which claimed it earlier in name
    order. The file that held it at the last load keeps it, whatever was edited since (a copy
    saved as `a-copy.toml`, or a new lab list naming a subscriber, must not take their digest);
    else a reader's own profile over a list's recipient; else the first in name order. So the
    same files give the same answer whichever of them changed, cache or no cache."""
    if prior in (name, other):
        return prior == name
    return other_list and not is_list


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
    names.sort()  # as `load_profiles` reads them (without its memory of the last load)
    out: list[Scheduled] = []
    broken = 0
    holders: dict[str, tuple[str, bool, int]] = {}  # address -> file, a list?, place in out
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
        is_list = len(ones) > 1
        for one in ones:
            key = one.email.lower()
            held = holders.get(key)
            if held is not None:
                broken += 1  # as `load_profiles`: one of the two is an error
                if not _takes_over(None, name, is_list, held[0], held[1]):
                    continue
                out[held[2]] = one  # a reader's own profile over a list's recipient
                holders[key] = (name, is_list, held[2])
                continue
            holders[key] = (name, is_list, len(out))
            out.append(one)
    return out, broken
