"""A digest's HTML frame, rendered and CSS-inlined once per shape in a run, filled in per reader.

After the paper blocks (digest.mail.blocks) were shared, inlining each reader's small frame was
still the largest single cost of a message. Yet the frame differs between readers only by a few
strings (their name and address, their links) and by its shape (how many papers, trending or
not, the day). So per shape it is rendered with stand-ins for those strings and a marker where
each paper goes, inlined once and cut at the stand-ins; a reader's frame is then one join.

It is done only where that gives what rendering and inlining the frame for the reader would:
- the frame reads no other context than the strings and the shape, and writes each string out
  as it is (`{{ name }}`), never filters, compares or passes it on (checked on its source, which
  must include or extend no other template); of each paper it reads only the marker;
- rendered with a second set of stand-ins, of another length, it differs only by them;
- every stand-in and marker comes through the inliner exactly as often as it went in, and the
  CSS does not depend on an element's place among its siblings.
Otherwise the frame is rendered and inlined for each reader, as before.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import jinja2
from jinja2 import meta, nodes
from markupsafe import Markup

from digest.mail.blocks import (
    MARKER,
    RAW_TEXT,
    by_position,
    html_escaped,
    inline,
    marker,
    template_tree,
    written_out,
)
from digest.text import has_control

FRAME = "digest.html"
# The reader's own strings, filled in per reader.
FIELDS = (
    "name",
    "email",
    "day_text",
    "digest_url",
    "profile_file",
    "unsubscribe_url",
    "base_url",
    "feed_url",
)
# What else the frame may read: the shape, part of the cache key.
SHAPE = ("papers", "trending", "day", "picked")
# Two sets of stand-ins of different lengths: `|length` or `|wordwrap` on a value gives itself away.
_MINE = {f: f"dgfr{secrets.token_hex(8)}{f}" for f in FIELDS}
_OTHER = {f: f"dgfr{secrets.token_hex(13)}{f}" for f in FIELDS}
_FIELD_OF = {v: k for k, v in _MINE.items()}


class _Paper:
    """A paper as the shared frame sees it: its marker, nothing else. Reading anything more
    (`p.title`) is noted, and that frame is made for each reader."""

    __slots__ = ("_read", "html")

    def __init__(self, html: Markup, read: set[str]) -> None:
        self.html = html
        self._read = read

    def __getattr__(self, name: str) -> Any:
        self._read.add(name)
        raise AttributeError(name)

    def __getitem__(self, key: object) -> Any:
        self._read.add(str(key))
        raise KeyError(key)


@dataclass(frozen=True)
class Frame:
    """One shape's frame: ``probe`` as rendered (a marker where each paper goes, for inlining a
    new paper block inside it), ``parts`` the inlined frame cut at stand-ins and markers."""

    probe: str
    parts: list[str]
    # For each odd part: a field name, or the position of a paper.
    slots: list[str | int]
    # Whether every raw-text element of the frame (`<style>`, ...) closes before any paper,
    # with only ASCII in the frame before it closes: then, where the reader's strings before
    # that point (`before_close`) are ASCII too, compose need not look for them in each
    # message (`vouches`).
    raw_text_first: bool = False
    before_close: tuple[str, ...] = ()

    def vouches(self, values: Mapping[str, Any]) -> bool:
        return self.raw_text_first and all(str(values[f]).isascii() for f in self.before_close)

    def fill(self, values: Mapping[str, str], papers: list[str]) -> str:
        parts = self.parts.copy()
        for k, slot in enumerate(self.slots):
            parts[2 * k + 1] = papers[slot] if isinstance(slot, int) else html_escaped(values[slot])
        return "".join(parts)


@dataclass
class Frames:
    """One run's frames, for one Jinja environment; None per shape where a frame cannot be
    shared (see the module's notes)."""

    _shapes: dict[tuple[int, bool, date, int], Frame | None] = field(default_factory=dict)
    _shareable: bool | None = None

    def get(self, env: jinja2.Environment, ctx: Mapping[str, Any]) -> Frame | None:
        if not self._reads_only_shape(env):
            return None
        if not all(isinstance(ctx.get(f), str) and ctx[f] for f in FIELDS):
            return None  # an empty value may be what the frame tests for
        if any(has_control(ctx[f]) for f in FIELDS):
            return None  # a CR or NUL the inliner's parser would change, unlike escaping
        day = ctx.get("day")
        if not isinstance(day, date):
            return None
        key = (len(ctx["papers"]), bool(ctx["trending"]), day, int(ctx.get("picked", 0)))
        if key not in self._shapes:
            self._shapes[key] = _make(env, ctx, len(ctx["papers"]))
        return self._shapes[key]

    def _reads_only_shape(self, env: jinja2.Environment) -> bool:
        if self._shareable is None:
            tree = template_tree(env, FRAME)
            self._shareable = (
                tree is not None
                and not list(meta.find_referenced_templates(tree))
                and meta.find_undeclared_variables(tree) <= {*FIELDS, *SHAPE}
                and written_out(tree, lambda n: isinstance(n, nodes.Name) and n.name in FIELDS)
            )
        return self._shareable


def _make(env: jinja2.Environment, ctx: Mapping[str, Any], n: int) -> Frame | None:
    template = env.get_template(FRAME)
    read: set[str] = set()

    def render(stand_ins: dict[str, str]) -> str:
        papers = [_Paper(marker(i), read) for i in range(n)]
        return template.render({**ctx, **stand_ins, "papers": papers})

    try:
        probe, other = render(_MINE), render(_OTHER)
    except jinja2.TemplateError:
        return None
    if read or _swapped(probe) != other or by_position(probe):
        return None
    out = inline(probe)
    if any(probe.count(s) != out.count(s) for s in _MINE.values()):
        return None
    # Text, then (a stand-in, or a marker and its paper's position), then text, and so on.
    pieces = re.split("(" + "|".join([*_MINE.values(), MARKER.pattern]) + ")", out)
    parts: list[str] = []
    slots: list[str | int] = []
    for k in range(0, len(pieces), 3):
        parts.append(pieces[k])
        if k + 1 < len(pieces):
            whole, position = pieces[k + 1], pieces[k + 2]
            slots.append(_FIELD_OF[whole] if position is None else int(position))
            parts.append("")
    positions = sorted(s for s in slots if isinstance(s, int))
    if positions != list(range(n)):
        return None
    return Frame(probe, parts, slots, *_raw_text_first(out, pieces))


def _raw_text_first(out: str, pieces: list[str]) -> tuple[bool, tuple[str, ...]]:
    """Whether the frame's raw-text elements all close before its first paper, in ASCII, and
    the reader's strings that come before the last one closes."""
    last = max(RAW_TEXT.finditer(out), key=lambda m: m.start(), default=None)
    if last is None:
        return True, ()
    if not last.group(1) or not out[: last.end()].isascii():
        return False, ()  # left open, or non-ASCII before it closes
    before: list[str] = []
    at = 0
    for k in range(0, len(pieces), 3):
        at += len(pieces[k])
        if k + 1 >= len(pieces) or at >= last.end():
            break
        whole, position = pieces[k + 1], pieces[k + 2]
        if position is not None:
            return False, ()  # a paper before it closes
        before.append(_FIELD_OF[whole])
        at += len(whole)
    return True, tuple(before)


def _swapped(mine: str) -> str:
    for f in FIELDS:
        mine = mine.replace(_MINE[f], _OTHER[f])
    return mine
