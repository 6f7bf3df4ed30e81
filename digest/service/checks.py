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
from digest.profiles import Interests, Profile
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
    # Once per file: a lab list's recipients share theirs.
    profiles = list({(str(p.path) if p.path else p.email): p for p in profiles}.values())
    # Each profile's interests, and each topic's, with the key they are written under.
    parts = [(p, key, i) for p in profiles for key, i in _interests(p)]
    wanted = [pid for _, _, i in parts for pid in i.papers]
    wanted += [e.arxiv_id for p in profiles for e in p.library if e.arxiv_id]
    looked = lookup_papers(store, cfg, wanted, today)
    missing = set(looked.missing)
    # A category outside the taxonomy is fine when some stored paper carries it (a feed's own).
    seen = {
        c: store.has_category(c) for _, _, i in parts for c in i.categories if c not in CATEGORIES
    }
    out: list[ProfileWarning] = []
    hf = {s.name for s in cfg.sources if s.kind == "hf-daily"}
    for p in profiles:
        i = p.interests
        said = p.trending or i.keywords or i.authors or i.categories or i.papers or p.topics
        if not (said or p.library):
            out.append(
                ProfileWarning(
                    str(p.path) if p.path else p.email,
                    "interests",
                    "no keywords, authors, categories, papers or usable papers_file: "
                    "nothing will be picked for this reader",
                )
            )
        if p.trending_section and not (hf & set(p.sources) if p.sources is not None else hf):
            out.append(
                ProfileWarning(
                    str(p.path) if p.path else p.email,
                    "trending_section",
                    "no hf-daily source among "
                    + ("its sources" if p.sources is not None else "the configured sources")
                    + ": the section stays empty",
                )
            )
        gone = [e for e in p.library if e.arxiv_id in missing]
        if gone:
            untitled = sum(1 for e in gone if not e.title)
            out.append(
                ProfileWarning(
                    str(p.path) if p.path else p.email,
                    "papers_file",
                    f"{len(gone)} arXiv id(s) of the library could not be looked up"
                    + (f" ({looked.error})" if looked.error else "")
                    + " "
                    f"({', '.join(str(e.arxiv_id) for e in gone[:3])}"
                    f"{', …' if len(gone) > 3 else ''}): "
                    + (
                        f"{untitled} of them have no title in the file and are not used"
                        if untitled
                        else "their titles and abstracts in the file are used"
                    ),
                )
            )
    for p, key, interests in parts:
        path = str(p.path) if p.path else p.email
        for n, pid in enumerate(interests.papers):
            if pid not in missing:
                continue
            problem = (
                f"{pid!r} could not be checked: {looked.error}"
                if looked.error
                else f"{pid!r} was not found on arXiv (source {looked.source}); is the id right?"
            )
            out.append(ProfileWarning(path, f"{key}.papers[{n}]", problem))
        for n, cat in enumerate(interests.categories):
            unknown = unknown_category(cat) if cat in seen and not seen[cat] else None
            if unknown:
                out.append(ProfileWarning(path, f"{key}.categories[{n}]", unknown))
    return out


def _interests(profile: Profile) -> list[tuple[str, Interests]]:
    return [("interests", profile.interests)] + [
        (f"topics[{n}]", t) for n, t in enumerate(profile.topics)
    ]
