"""The arXiv category taxonomy, to tell a profile's typo (`cs.XX`, `astroph`) from a category.

Only for warnings: matching never consults this list, so a category arXiv adds later still
works in a profile, and `digest subscribers check` stops warning once a stored paper carries it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

_GROUPS = {
    "astro-ph": "CO EP GA HE IM SR",
    "cond-mat": "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con",
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE "
    "NI OH OS PF PL RO SC SD SE SI SY",
    "econ": "EM GN TH",
    "eess": "AS IV SP SY",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA "
    "RT SG SP ST",
    "nlin": "AO CD CG PS SI",
    "physics": "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an ed-ph "
    "flu-dyn gen-ph geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph space-ph",
    "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "q-fin": "CP EC GN MF PM PR RM ST TR",
    "stat": "AP CO ME ML OT TH",
}
# Archives without subject classes.
_SINGLE = ("gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph", "nucl-ex", "nucl-th",
           "quant-ph")  # fmt: skip

# A profile may name an archive (`cs`) to mean all of its classes, as matching does.
CATEGORIES: frozenset[str] = frozenset(
    [*_SINGLE, *_GROUPS, *(f"{g}.{c}" for g, cs in _GROUPS.items() for c in cs.split())]
)


def unknown_category(name: str, also_known: Iterable[str] = ()) -> str | None:
    """None for a known category; otherwise the problem, with the closest known names."""
    known = CATEGORIES | set(also_known)
    if name in known:
        return None
    # Case slips (`cs.cl`) and a lost hyphen (`astroph`) are the usual typos.
    by_key = {k.lower().replace("-", ""): k for k in known}
    key = name.lower().replace("-", "")
    found = [key] if key in by_key else difflib.get_close_matches(key, list(by_key), 3, 0.75)
    close = [by_key[k] for k in found]
    hint = (
        f"; did you mean {' or '.join(close)}?" if close else " (see arxiv.org/category_taxonomy)"
    )
    return f"{name!r} is not an arXiv category{hint}"


def classes_of(name: str) -> list[str]:
    """The subject classes an archive with classes stands for (`astro-ph` -> astro-ph.CO, …);
    any other name (a class, an archive without classes, one unknown here) is itself."""
    classes = _GROUPS.get(name)
    return [f"{name}.{c}" for c in classes.split()] if classes else [name]
