"""Each paper's part of a digest, made once per run and shared by every reader who gets it.

A run renders the same few hundred papers for up to 100,000 readers, and both Jinja and the CSS
inliner cost about a millisecond per message. So the paper templates (`digest_paper.html`,
`digest_paper.txt`) are rendered once per paper with stand-ins where the reader's own values go
(the reason, the two feedback links, the position), the HTML block CSS-inlined inside the real
frame so that selectors naming the frame still apply. Per reader the frame (`digest.html`,
`digest.txt`) is rendered with a comment marker where each paper goes, the small frame is
inlined, and the markers and stand-ins are replaced by plain string substitution.

The stand-ins carry a random token of this process, so no feed text can forge one. A block is
shared only where its template writes the reader's values out as they are (`{{ p.reason }}`, or
the reason handed to the template's own `why` macro, which runs per reader): a test, filter or
macro of its own on one (`{% if "author" in p.reason %}`) could not be told from a stand-in.
It is also rendered with a second set of stand-ins, and must differ only by them. Otherwise the
paper is rendered for each reader with their own values. Where the inlined output does not
hold each marker and stand-in exactly as often as expected, or the CSS depends on an element's
place among its siblings (`:nth-child`, `+`, ...), the message is inlined whole: slower, never
wrong.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes
from markupsafe import Markup

from digest.text import has_control

_TOKEN, _CHECK = secrets.token_hex(8), secrets.token_hex(8)
FIELDS = ("why", "more", "less", "index")


def _stand_ins(token: str) -> dict[str, str]:
    return {name: f"dgst{token}{name}" for name in FIELDS}


_MINE, _OTHER = _stand_ins(_TOKEN), _stand_ins(_CHECK)
_STAND_INS = re.compile("(" + "|".join(_MINE.values()) + ")")
MARKER = re.compile(f"<!--dgst{_TOKEN}paper([0-9]+)-->")
START, END = f"<!--dgst{_TOKEN}start-->", f"<!--dgst{_TOKEN}end-->"
# Selectors whose match depends on an element's siblings (a block inlined apart from the
# others, or a frame inlined without its papers, would take other styles than in the
# message), or on its attributes (`a[href^="https"]`: the stand-ins stand where links go).
_BY_POSITION = re.compile(r":(nth-|first-|last-|only-)|[+~\[]")
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)
# Elements whose text an HTML parser takes as it is, character references included (CSS,
# scripts, and a few obsolete ones): digest.mail.compose writes no reference before the last
# has closed.
RAW_TEXT = re.compile(r"<(/?)(?:style|script|xmp|iframe|noembed|noframes|plaintext)\b", re.I)
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


def marker(i: int) -> Markup:
    return Markup(f"<!--dgst{_TOKEN}paper{i}-->")


def html_escaped(value: str) -> str:
    """Text as the inliner's HTML serialiser writes it, quotes included so the same value is
    safe in an attribute: the stand-ins are replaced after serialisation."""
    return (
        value.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def inline(html: str) -> str:
    import css_inline

    # keep_style_tags: the dark-mode and narrow-screen media queries only work from <style>.
    return str(css_inline.CSSInliner(keep_style_tags=True).inline(html))


def by_position(html: str) -> bool:
    """Whether the document's CSS has selectors that depend on where an element stands."""
    css = " ".join(_COMMENT.sub("", m) for m in _STYLE.findall(html))
    return _BY_POSITION.search(css) is not None


class _Pieces:
    """A block cut at its stand-ins once, so that filling it in per reader is one join."""

    __slots__ = ("parts",)

    def __init__(self, block: str) -> None:
        self.parts = _STAND_INS.split(block)  # text, stand-in, text, ..., text

    def filled(
        self, paper: dict[str, Any], position: int, reason: str, escape: Callable[[str], str]
    ) -> str:
        values = {
            _MINE["why"]: escape(reason),
            _MINE["more"]: escape(paper["more_url"]),
            _MINE["less"]: escape(paper["less_url"]),
            _MINE["index"]: str(position + 1),
        }
        parts = self.parts.copy()
        for k in range(1, len(parts), 2):
            parts[k] = values[parts[k]]
        return "".join(parts)


# A block is made per paper, trending or not, with or without its excerpt, and per heading
# (the section it opens, if any).
_Key = tuple[str, bool, bool, str]


def _key(paper: dict[str, Any], trending: bool) -> _Key:
    return (paper["id"], trending, bool(paper["excerpt"]), str(paper.get("heading", "")))


@dataclass
class PaperBlocks:
    """One run's paper parts, for one Jinja environment: each paper's reader-independent
    context (LaTeX to text, checked links, the author line) and its rendered blocks."""

    static: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per `_key`; None where the paper is rendered for each reader.
    _html: dict[_Key, _Pieces | None] = field(default_factory=dict)
    _text: dict[_Key, _Pieces | None] = field(default_factory=dict)
    # Blocks that open a section (a topic's name is the reader's own text): kept apart and
    # bounded, oldest out first, so 100,000 readers' topic names cannot fill the memory.
    _html_headed: dict[_Key, _Pieces | None] = field(default_factory=dict)
    _text_headed: dict[_Key, _Pieces | None] = field(default_factory=dict)
    _templates: bool | None = None
    _why: Callable[[str], str] | None = None
    # Whether a shared HTML block holds a raw-text element (`RAW_TEXT`): then where each
    # message's last one closes is looked for in the whole message.
    raw_text: bool = False
    # Per template: whether it writes the reader's values out as they are (`written_out`).
    _plain: dict[str, bool] = field(default_factory=dict)

    def available(self, env: jinja2.Environment) -> bool:
        """Whether the templates have paper blocks (templates copied before they had them do
        not, and render each paper in the frame as before)."""
        if self._templates is None:
            try:
                env.get_template("digest_paper.html")
                env.get_template("digest_paper.txt")
                self._templates = True
            except jinja2.TemplateNotFound:
                self._templates = False
        return self._templates

    def text(
        self, env: jinja2.Environment, paper: dict[str, Any], position: int, trending: bool
    ) -> str:
        key = _key(paper, trending)
        texts = self._text_headed if key[3] else self._text
        if key not in texts and not self._written_out(env, "digest_paper.txt"):
            texts[key] = _bounded(texts, key[3], None)
        if key not in texts:
            template = env.get_template("digest_paper.txt")
            # As a module, so that its `why` macro (how a reason is laid out) can be called
            # per reader; rendering it with no paper would fail on the undefined `p`.
            module = template.make_module(_context(paper, trending, _MINE))
            self._why = getattr(module, "why", None)
            check = str(template.make_module(_context(paper, trending, _OTHER)))
            made = _Pieces(str(module)) if _same(str(module), check) else None
            texts[key] = _bounded(texts, key[3], made)
        block = texts[key]
        if block is None or _odd(paper):  # this reader's own values, rendered
            return _own(env, "digest_paper.txt", paper, position, trending)
        reason = str(self._why(paper["reason"])) if self._why else str(paper["reason"])
        return block.filled(paper, position, reason, str)

    def html(
        self,
        env: jinja2.Environment,
        paper: dict[str, Any],
        position: int,
        trending: bool,
        probe: str,
    ) -> str | None:
        """The paper's HTML block for this reader, CSS-inlined; None where that could not be
        done apart from the frame. ``probe`` is this reader's frame, rendered with
        `marker(position)` where the block goes."""
        key = _key(paper, trending)
        htmls = self._html_headed if key[3] else self._html
        if key not in htmls and not self._written_out(env, "digest_paper.html"):
            htmls[key] = _bounded(htmls, key[3], None)
        if key not in htmls:
            template = env.get_template("digest_paper.html")
            raw = template.render(_context(paper, trending, _MINE))
            check = template.render(_context(paper, trending, _OTHER))
            inlined = _inlined_block(raw, probe, marker(position)) if _same(raw, check) else None
            htmls[key] = _bounded(htmls, key[3], None if inlined is None else _Pieces(inlined))
            self.raw_text = self.raw_text or bool(inlined and RAW_TEXT.search(inlined))
        block = htmls[key]
        if block is None or _odd(paper):
            return None
        return block.filled(paper, position, str(paper["reason"]), html_escaped)

    def _written_out(self, env: jinja2.Environment, name: str) -> bool:
        if name not in self._plain:
            tree = template_tree(env, name)
            self._plain[name] = tree is not None and written_out(tree, why=name.endswith(".txt"))
        return self._plain[name]

    def raw_html(
        self, env: jinja2.Environment, paper: dict[str, Any], position: int, trending: bool
    ) -> str:
        """The block as the template renders it for this reader, for a message inlined whole."""
        return _own(env, "digest_paper.html", paper, position, trending)


# Section-opening blocks kept per run (each holds a paper's block and a heading).
MAX_HEADED = 4096


def _bounded(
    cache: dict[_Key, _Pieces | None], headed: str, block: _Pieces | None
) -> _Pieces | None:
    """``block``, making room for it first where ``cache`` holds section-opening blocks."""
    if headed and len(cache) >= MAX_HEADED:
        del cache[next(iter(cache))]
    return block


def template_tree(env: jinja2.Environment, name: str) -> nodes.Template | None:
    """A template's source, parsed; None where it cannot be (rendering it per reader reports
    the error)."""
    try:
        return env.parse(env.loader.get_source(env, name)[0] if env.loader else "")
    except jinja2.TemplateError:
        return None


def _odd(paper: dict[str, Any]) -> bool:
    """A reason with a control character: the inliner's parser would change a CR or drop a NUL
    that the escaping of a filled-in value keeps. (The links cannot hold one: `base_url` is
    refused with any at load, and a token is URL-safe base64.)"""
    return has_control(str(paper["reason"]))


def _own(
    env: jinja2.Environment, name: str, paper: dict[str, Any], position: int, trending: bool
) -> str:
    """A paper's block rendered with this reader's own values: the slow path, for templates
    that cannot share a block."""
    return env.get_template(name).render(_context(paper, trending, None, position))


def _context(
    paper: dict[str, Any], trending: bool, stand_ins: dict[str, str] | None, position: int = 0
) -> dict[str, Any]:
    """The block's context: with stand-ins for the reader's own values, or (None) the values."""
    if stand_ins is None:
        return {"p": paper, "index": position + 1, "trending": trending}
    mine = {
        "reason": stand_ins["why"],
        "more_url": stand_ins["more"],
        "less_url": stand_ins["less"],
    }
    return {"p": {**paper, **mine}, "index": stand_ins["index"], "trending": trending}


_OWN_ATTRS = {"why": "reason", "more": "more_url", "less": "less_url"}
# Nodes under which a value written out is not what reaches the message: a filter block, a
# captured `set`, a macro or call block, a change of autoescaping.
_ALTERING = (
    nodes.FilterBlock,
    nodes.AssignBlock,
    nodes.Macro,
    nodes.CallBlock,
    nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier,
)


def _own_value(node: nodes.Node) -> bool:
    """Whether the node reads one of the reader's values: `p.reason` (or `p["reason"]`), a
    link, or `index`."""
    if isinstance(node, nodes.Name):
        return node.name == "index"
    if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        return node.node.name == "p" and key in _OWN_ATTRS.values()
    return False


def written_out(
    tree: nodes.Node,
    own: Callable[[nodes.Node], bool] = _own_value,
    why: bool = False,
    whole: str = "p",
) -> bool:
    """Whether every read of a reader's own value (``own``) is written out on its own
    (`{{ p.reason }}`), under no filter block, captured `set`, macro or autoescape change;
    with ``why``, also as the argument of the template's `why` macro written out on its own
    (the text block calls it per reader). ``whole``, the name holding the values, may only be
    read a field at a time (`p.title`, `p["title"]`): `p.get("reason")`, `p|dictsort` or a
    loop over it would see the stand-ins unnoticed."""
    return _walk(tree, [], own, why, whole)


def _walk(
    node: nodes.Node,
    above: list[nodes.Node],
    own: Callable[[nodes.Node], bool],
    why: bool,
    whole: str,
) -> bool:
    path = [*above, node]
    for child in node.iter_child_nodes():
        if own(child):
            if not _plainly_out(child, path, why):
                return False
        elif isinstance(child, nodes.Name) and child.name == whole and child.ctx == "load":
            if not _one_field(child, path):
                return False
        elif not _walk(child, path, own, why, whole):
            return False
    return True


def _plainly_out(value: nodes.Node, path: list[nodes.Node], why: bool) -> bool:
    if any(isinstance(n, _ALTERING) for n in path):
        return False
    parent = path[-1]
    if isinstance(parent, nodes.Output):
        return True
    by_why = (
        why
        and isinstance(parent, nodes.Call)
        and isinstance(parent.node, nodes.Name)
        and parent.node.name == "why"
        and value in parent.args
    )
    return bool(by_why and len(path) > 1 and isinstance(path[-2], nodes.Output))


def _one_field(name: nodes.Name, path: list[nodes.Node]) -> bool:
    parent = path[-1]
    if isinstance(parent, nodes.Getattr) and parent.node is name:
        field_ok = not hasattr(dict, parent.attr)  # `p.get`, `p.items`: the dict's methods
    elif isinstance(parent, nodes.Getitem) and parent.node is name:
        field_ok = isinstance(parent.arg, nodes.Const)
    else:
        return False
    called = len(path) > 1 and isinstance(path[-2], nodes.Call) and path[-2].node is parent
    return field_ok and not called


def _same(mine: str, other: str) -> bool:
    """Whether two renders differ only by their stand-ins: the template passed them through."""
    for name in FIELDS:
        mine = mine.replace(_MINE[name], _OTHER[name])
    return mine == other


def _inlined_block(raw: str, probe: str, at: Markup) -> str | None:
    """The block inlined inside the reader's frame (so descendant selectors still match), cut
    back out between two markers; None when the stand-ins did not come through unchanged."""
    if probe.count(at) != 1 or by_position(probe):
        return None
    out = inline(probe.replace(at, START + raw + END))
    if out.count(START) != 1 or out.count(END) != 1:
        return None
    inlined = out[out.index(START) + len(START) : out.index(END)]
    if any(raw.count(s) != inlined.count(s) for s in _MINE.values()):
        return None
    return inlined


def inline_frame(frame: str, blocks: list[str]) -> str | None:
    """The reader's frame inlined, each marker replaced by its (inlined) block in one pass;
    None when a marker did not come through exactly once."""
    if by_position(frame):
        return None
    out = inline(frame)
    found = [int(i) for i in MARKER.findall(out)]
    if sorted(found) != list(range(len(blocks))):
        return None
    return MARKER.sub(lambda m: blocks[int(m.group(1))], out)
