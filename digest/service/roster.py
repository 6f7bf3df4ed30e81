"""Who is subscribed: each profile file joined with what the database knows of its reader.

A reader's file says what they want; the database says whether they may be mailed
(unsubscribed from a link or by the operator, disabled after bounces). The operator needs both in
one view, including readers who unsubscribed and whose file is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from digest.errors import NotFound
from digest.profiles import Profile
from digest.service.schedule import cadence
from digest.store.papers import Store
from digest.store.schema import SubscriberState

STATES = ("active", "unsubscribed", "disabled")


@dataclass(frozen=True)
class Reader:
    email: str
    state: str  # one of STATES
    profile: Profile | None  # None: only the database remembers this reader
    since: datetime | None = None  # when they unsubscribed
    reason: str = ""  # why they were disabled
    bounces: int = 0

    def record(self) -> dict[str, Any]:
        """Plain values for CSV and JSON: lists stay lists, missing values are empty."""
        p = self.profile
        i = p.interests if p else None
        return {
            "email": self.email,
            "name": p.name if p else "",
            "state": self.state,
            "since": self.since.isoformat(timespec="seconds") if self.since else "",
            "reason": self.reason,
            "bounces": self.bounces,
            "mode": ("trending" if p.trending else "personal") if p else "",
            "send_at": p.send_at if p else "",
            "cadence": (cadence(p) or "daily") if p else "",
            "trending_section": p.trending_section if p else "",
            "papers_file": p.papers_file or "" if p else "",
            "list": len(p.recipients) if p and p.recipients else "",
            "timezone": p.timezone if p else "",
            "max_papers": p.max_papers if p else "",
            "keywords": list(i.keywords) if i else [],
            "authors": list(i.authors) if i else [],
            "categories": list(i.categories) if i else [],
            "exclude": list(i.exclude) if i else [],
            "papers": list(i.papers) if i else [],
            "topics": [t.name for t in p.topics] if p else [],
            "file": str(p.path) if p and p.path else "",
        }


def _state_of(st: SubscriberState | None) -> str:
    if st is not None and st.disabled:
        return "disabled"
    if st is not None and st.unsubscribed_at is not None:
        return "unsubscribed"
    return "active"


def reader(profile: Profile | None, email: str, st: SubscriberState | None) -> Reader:
    return Reader(
        email=profile.email if profile else email,
        state=_state_of(st),
        profile=profile,
        since=st.unsubscribed_at if st else None,
        reason=(st.disabled_reason or "") if st and st.disabled else "",
        bounces=st.bounce_count if st else 0,
    )


def roster(profiles: Sequence[Profile], store: Store) -> list[Reader]:
    """Every reader with a profile, then those only the database knows who are not active."""
    states = store.subscriber_states()
    out = [reader(p, p.email, states.get(p.email.lower())) for p in profiles]
    known = {p.email.lower() for p in profiles}
    for email, st in sorted(states.items()):
        if email not in known and _state_of(st) != "active":
            out.append(reader(None, email, st))
    return out


def held_back(store: Store) -> dict[str, str]:
    """Every reader who may not be mailed (lower-case address -> state), with a profile or
    not: what `roster` says of them, without a Reader for each of 100,000 profiles."""
    out = {}
    for email, st in store.subscriber_states().items():
        state = _state_of(st)
        if state != "active":
            out[email] = state
    return out


def find_reader(profiles: Sequence[Profile], store: Store, email: str) -> Reader:
    """The reader with this address (any case), or NotFound naming where we looked."""
    key = email.strip().lower()
    profile = next((p for p in profiles if p.email.lower() == key), None)
    st = store.subscriber_state(key)
    if profile is None and st is None:
        raise NotFound(f"no subscriber {email}: no profile has this address and none is stored")
    return reader(profile, key, st)
