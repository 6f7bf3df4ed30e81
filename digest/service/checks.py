"""Second-look checks of valid profiles: values that parse but name nothing real.

A profile with an example id that does not exist (`2411.99999`) or a category typo (`astroph`)
loads fine and then silently matches nothing. These checks look each value up (the store, then
the arXiv API, then arXiv's taxonomy) and warn, naming file, key and value; they never stop a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from digest.arxiv_taxonomy import CATEGORIES, unknown_category
from digest.config import Config
from digest.ingest.run import lookup_papers
from digest.profiles import Profile
from digest.store.papers import Store


@dataclass(frozen=True)
class ProfileWarning:
    path: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: {self.problem}"


def profile_warnings(
    cfg: Config, store: Store, profiles: Sequence[Profile], today: date
) -> list[ProfileWarning]:
    """Unknown example papers (after looking them up) and unknown categories, in file order."""
    wanted = [pid for p in profiles for pid in p.interests.papers]
    looked = lookup_papers(store, cfg, wanted, today)
    missing = set(looked.missing)
    # A category outside the taxonomy is fine when some stored paper carries it (a feed's own).
    seen = {
        c: store.has_category(c)
        for p in profiles
        for c in p.interests.categories
        if c not in CATEGORIES
    }
    out: list[ProfileWarning] = []
    for p in profiles:
        path = str(p.path) if p.path else p.email
        for i, pid in enumerate(p.interests.papers):
            if pid not in missing:
                continue
            problem = (
                f"{pid!r} could not be checked: {looked.error}"
                if looked.error
                else f"{pid!r} was not found on arXiv (source {looked.source}); is the id right?"
            )
            out.append(ProfileWarning(path, f"interests.papers[{i}]", problem))
        for i, cat in enumerate(p.interests.categories):
            unknown = unknown_category(cat) if cat in seen and not seen[cat] else None
            if unknown:
                out.append(ProfileWarning(path, f"interests.categories[{i}]", unknown))
    return out
