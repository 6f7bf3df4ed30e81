"""Rendering: Jinja templates (HTML, plain text, subject) and the one message builder.

Everything from feeds and profiles is untrusted: the HTML template autoescapes, links are kept
only when they are http(s), and header values are stripped of control characters before the
email library folds and encodes them.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import date
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import jinja2
from jinja2.filters import do_wordwrap
from jinja2.utils import pass_environment
from markupsafe import Markup

from digest import PACKAGE
from digest.config import Config
from digest.mail.blocks import PaperBlocks, inline, inline_frame, marker
from digest.mail.frames import Frames
from digest.mail.links import Signer
from digest.profiles import Profile
from digest.rank.ranker import Pick
from digest.record import canonical_arxiv_id
from digest.store.schema import Paper
from digest.text import masked, plain_latex, plain_name

EXCERPT_CHARS = 320
# Gmail clips a message body at about 102 KB; stay under it with room for the headers.
MAX_MESSAGE_BYTES = 95_000
MAX_AUTHORS = 4
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_WRAP_ENV = jinja2.Environment()


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    # Set where the HTML is known to open and close every raw-text element (`<style>`, ...)
    # in a first stretch of ASCII (digest.mail.frames), for compose's 7-bit check.
    raw_text_checked: bool = False

    # The bodies as UTF-8, encoded once: the size check and the message both need them.
    @cached_property
    def text_bytes(self) -> bytes:
        return self.text.encode()

    @cached_property
    def html_bytes(self) -> bytes:
        return self.html.encode()

    @property
    def size(self) -> int:
        """Roughly the encoded body: quoted-printable adds about a tenth to the text, and
        character references about as much to the HTML (digest.mail.compose)."""
        return int(1.1 * (len(self.text_bytes) + len(self.html_bytes)))


def templates_dir(cfg: Config) -> Path:
    """The configured templates, else the ones in the wheel, else the repository's."""
    if cfg.templates_dir is not None:
        return cfg.templates_dir
    here = PACKAGE
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "digest.html").is_file():
            return candidate
    raise FileNotFoundError("no templates directory found (set templates_dir in digest.toml)")


@lru_cache(maxsize=65536)
def _wrapped(
    s: str, width: int, break_long_words: bool, wrapstring: str | None, break_on_hyphens: bool
) -> str:
    simple = not (break_long_words or break_on_hyphens) and width > 0 and s.isprintable()
    if simple and wrapstring is not None:
        return wrapstring.join(_greedy_lines(s, width))
    # Jinja's own filter needs an environment only for its default newline sequence.
    return do_wordwrap(_WRAP_ENV, s, width, break_long_words, wrapstring, break_on_hyphens)


_SPACES = re.compile(r"( +)")


def _greedy_lines(s: str, width: int) -> list[str]:
    """textwrap's greedy fill, for one line of printable text (its only whitespace plain
    spaces) with long words kept whole: the lines textwrap.wrap gives, at a fraction of the cost
    (tests/test_render.py holds the two side by side). Every reason in a run is wrapped anew."""
    if "  " not in s and not s.startswith(" ") and not s.endswith(" "):
        return _single_spaced_lines(s, width)
    chunks = [c for c in _SPACES.split(s) if c]
    chunks.reverse()
    lines: list[str] = []
    while chunks:
        line: list[str] = []
        used = 0
        if lines and chunks[-1][0] == " ":  # a line after the first starts with no space
            del chunks[-1]
        while chunks and used + len(chunks[-1]) <= width:
            used += len(chunks[-1])
            line.append(chunks.pop())
        if chunks and not line:  # a word longer than the width: a line of its own
            line.append(chunks.pop())
        if line and line[-1][0] == " ":
            del line[-1]
        if line:
            lines.append("".join(line))
    return lines


def _single_spaced_lines(s: str, width: int) -> list[str]:
    """`_greedy_lines` for words one space apart (nearly every reason, title and author list),
    by finding the last space that fits instead of splitting into chunks: each line is the
    longest run of whole words that fits, or one word longer than a line."""
    lines: list[str] = []
    while len(s) > width:
        cut = s.rfind(" ", 0, width + 1)
        if cut < 0:
            cut = s.find(" ")
            if cut < 0:
                break
        lines.append(s[:cut])
        s = s[cut + 1 :]
    if s:
        lines.append(s)
    return lines


@pass_environment
def _wordwrap(
    env: jinja2.Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's `wordwrap`, remembered: a run wraps the same titles, author lists and abstracts
    for thousands of readers, and textwrap is slow."""
    return _wrapped(
        s, width, break_long_words, wrapstring or env.newline_sequence, break_on_hyphens
    )


def environment(cfg: Config, auto_reload: bool = True) -> jinja2.Environment:
    """The templates' environment. A run passes ``auto_reload=False``: it renders every digest
    with the templates as they were when it started, instead of asking the file system for
    each template's date three times a digest."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir(cfg)),
        auto_reload=auto_reload,
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wordwrap"] = _wordwrap
    return env


def header_text(value: str, limit: int = 200) -> str:
    """A single-line header value from untrusted text.

    Controls (CR, LF, tabs, ...) become spaces, and "=?" is broken up: an RFC 2047 encoded word
    such as `=?UTF-8?Q?=0A?=` smuggled into a name would otherwise be re-emitted undecoded
    and turn into a line break when folded (CVE-2024-6923).
    """
    value = " ".join(_CONTROL.sub(" ", value).split()).replace("=?", "= ?")
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


# A pick's section (`Pick.section`): "" the reader's own picks, TRENDING the trending section of
# a personal digest, "topic:<name>" one of the profile's topics.
TRENDING = "trending"


def section_heading(section: str) -> str:
    """A section's heading: a topic's name ("topic:<name>"), the trending section's, or the
    reader's own picks'."""
    if section.startswith("topic:"):
        return section[len("topic:") :]
    return "Trending on Hugging Face" if section == TRENDING else "Picked for you"


# Where a link in a digest may point: the paper sites, plus the hosts of configured feeds.
KNOWN_HOSTS = ("arxiv.org", "huggingface.co", "doi.org")


def link_hosts(cfg: Config) -> tuple[str, ...]:
    feeds = (urlsplit(s.url).hostname for s in cfg.sources if s.url.startswith("http"))
    return tuple(dict.fromkeys([*KNOWN_HOSTS, *(h for h in feeds if h)]))


def safe_link(url: str | None, hosts: tuple[str, ...] = KNOWN_HOSTS) -> str | None:
    """The link as https to a known host, or None: feeds are untrusted, and a link in our
    email carries our name."""
    if not url or not re.match(r"^https?://[^\s<>\"'\\]+$", url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    host = (parts.hostname or "").lower()
    if parts.username or parts.password or port not in (None, 443, 80):
        return None
    if not any(host == h or host.endswith("." + h) for h in hosts):
        return None
    # arXiv's older feeds say http://; the same page is served over https.
    return urlunsplit(("https", host, parts.path, parts.query, parts.fragment))


def short_authors(authors: list[str]) -> str:
    # Names are resolved at ingest; papers stored before that still carry TeX accents.
    if len(authors) <= MAX_AUTHORS:
        return ", ".join(plain_name(a) for a in authors)
    return ", ".join(plain_name(a) for a in authors[:3]) + f" et al. ({len(authors)} authors)"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")].rstrip(" ,;:") + " …" if " " in cut else cut + "…"


def unsubscribe_url(cfg: Config, email: str, signer: Signer | None = None) -> str:
    return f"{cfg.web.base_url}/u/{(signer or Signer(cfg)).unsubscribe(email)}"


def message_id_for(email: str, day: date, from_address: str, key: str) -> str:
    """Fixed for (subscriber, day): every attempt at one digest carries the same Message-ID.

    Keyed (HMAC-SHA256 under the signing key): a Message-ID travels in replies' References
    and in forwarded mail, and a plain hash of the address would let anyone holding one
    confirm a guessed address, as the links' ids do not."""
    mac = hmac.new(
        key.encode(), f"digest.message-id\0{email.lower()}|{day.isoformat()}".encode(), "sha256"
    )
    domain = from_address.rsplit("@", 1)[-1]
    return f"<digest.{day.isoformat()}.{mac.hexdigest()[:20]}@{domain}>"


def keep_links(p: Paper) -> tuple[str | None, str | None]:
    """Where a reader keeps a citation: arXiv's BibTeX for an arXiv paper, else the DOI's page
    (its resolver also answers a reference manager asking for BibTeX)."""
    if canonical_arxiv_id(p.id) == p.id:
        return f"https://arxiv.org/bibtex/{p.id}", None
    doi = (p.doi or "").strip()
    if doi.lower().startswith(("https://doi.org/", "http://doi.org/", "doi:")):
        doi = doi.split(":", 1)[1].removeprefix("//doi.org/")
    if not re.fullmatch(r"10\.\d{4,9}/\S+", doi):
        return None, None
    # Quoted whole but for the characters DOIs use, so no feed text can end the attribute.
    return None, safe_link("https://doi.org/" + quote(doi, safe="/:;()._-"))


def _paper_static(hosts: tuple[str, ...], p: Paper) -> dict[str, Any]:
    bibtex_url, doi_url = keep_links(p)
    return {
        "id": p.id,
        "bibtex_url": bibtex_url,
        "doi_url": doi_url,
        "title": plain_latex(p.title),
        "url": safe_link(p.abs_url, hosts),
        "pdf_url": safe_link(p.pdf_url, hosts),
        "hf_url": safe_link(p.hf_url, hosts),
        "upvotes": p.upvotes,
        "authors": short_authors(p.authors),
        "categories": p.categories[:4],
        "excerpt": excerpt(plain_latex(p.abstract)),
    }


def _paper_context(
    cfg: Config,
    signer: Signer,
    hosts: tuple[str, ...],
    email: str,
    day: date,
    pick: Pick[Paper],
    blocks: PaperBlocks,
    heading: str = "",
) -> dict[str, Any]:
    p = pick.paper
    static = blocks.static.get(p.id)
    if static is None:
        static = blocks.static[p.id] = _paper_static(hosts, p)
    feedback = f"{cfg.web.base_url}/f/"
    return {
        **static,
        "more_url": feedback + signer.feedback(email, p.id, day, "like"),
        "less_url": feedback + signer.feedback(email, p.id, day, "dislike"),
        "reason": pick.reason,
        "heading": heading,
    }


def headings(picks: list[Pick[Paper]]) -> list[str]:
    """Each pick's section heading where a section starts, else "": none at all when every
    pick is the reader's own (a digest without sections reads as it always has)."""
    if not any(p.section for p in picks):
        return [""] * len(picks)
    return [
        section_heading(p.section) if i == 0 or p.section != picks[i - 1].section else ""
        for i, p in enumerate(picks)
    ]


def render_digest(
    env: jinja2.Environment,
    cfg: Config,
    profile: Profile,
    picks: list[Pick[Paper]],
    day: date,
    signer: Signer | None = None,
    blocks: PaperBlocks | None = None,
    frames: Frames | None = None,
) -> Rendered:
    """The digest's subject, text and HTML. ``signer``, ``blocks`` and ``frames`` are the
    run's: the link keys read once, each paper's reader-independent part made once, and the
    HTML frame inlined once per shape."""
    signer, hosts = signer or Signer(cfg), link_hosts(cfg)
    blocks = PaperBlocks() if blocks is None else blocks
    ctx: dict[str, Any] = {
        "name": profile.display_name,
        # Shown in the footer, which travels with a forwarded digest and its web view.
        "email": masked(profile.email),
        "day": day,
        "day_text": f"{day:%A} {day.day} {day:%B %Y}",
        "papers": [
            _paper_context(cfg, signer, hosts, profile.email, day, p, blocks, h)
            for p, h in zip(picks, headings(picks), strict=True)
        ],
        # The reader's own picks, not those of the trending section.
        "picked": sum(1 for p in picks if p.section != TRENDING),
        "digest_url": f"{cfg.web.base_url}/d/{signer.digest(profile.email, day)}",
        "profile_file": profile.path.name if profile.path else "your profile",
        "unsubscribe_url": unsubscribe_url(cfg, profile.email, signer),
        # The reader's digests as an Atom feed, for a feed reader.
        "feed_url": f"{cfg.web.base_url}/a/{signer.feed(profile.email)}",
        "base_url": cfg.web.base_url,
        "interests": profile.interests,
        "trending": profile.trending,
    }
    subject = header_text(env.get_template("digest_subject.txt").render(ctx))
    papers: list[dict[str, Any]] = ctx["papers"]
    rendered = _render_parts(env, ctx, subject, blocks, frames)
    if rendered.size > MAX_MESSAGE_BYTES:
        # Too long for Gmail's clipping: abstracts go first, then papers from the bottom.
        for paper in papers:
            paper["excerpt"] = ""
        rendered = _render_parts(env, ctx, subject, blocks, frames)
    while rendered.size > MAX_MESSAGE_BYTES and len(papers) > 1:
        papers.pop()
        rendered = _render_parts(env, ctx, subject, blocks, frames)
    return rendered


def _render_parts(
    env: jinja2.Environment,
    ctx: dict[str, Any],
    subject: str,
    blocks: PaperBlocks,
    frames: Frames | None = None,
) -> Rendered:
    """The frame per reader, each paper's block from the run's `blocks` (see digest.mail.blocks);
    templates without paper blocks render and inline the whole message."""
    html_frame, text_frame = env.get_template("digest.html"), env.get_template("digest.txt")
    papers: list[dict[str, Any]] = ctx["papers"]
    if not blocks.available(env):
        return Rendered(subject, text_frame.render(ctx), inline(html_frame.render(ctx)))
    trending = bool(ctx["trending"])
    texts = [blocks.text(env, p, i, trending) for i, p in enumerate(papers)]
    with_text = [{**p, "text": t} for p, t in zip(papers, texts, strict=True)]
    text = text_frame.render({**ctx, "papers": with_text})
    frame = frames.get(env, ctx) if frames is not None else None
    if frame is not None:
        probe = frame.probe
    else:
        with_markers = [{**p, "html": marker(i)} for i, p in enumerate(papers)]
        probe = html_frame.render({**ctx, "papers": with_markers})
    parts = [blocks.html(env, p, i, trending, probe) for i, p in enumerate(papers)]
    inlined = [part for part in parts if part is not None]
    html, checked = None, False
    if len(inlined) == len(parts):
        html = frame.fill(ctx, inlined) if frame is not None else inline_frame(probe, inlined)
        # The values filled in are escaped text (no "<"): only the frame and blocks can hold
        # a raw-text element.
        checked = frame is not None and frame.vouches(ctx) and not blocks.raw_text
    if html is None:  # a template that moved a marker: the whole message inlined at once
        raw = [blocks.raw_html(env, p, i, trending) for i, p in enumerate(papers)]
        whole = [{**p, "html": Markup(r)} for p, r in zip(papers, raw, strict=True)]
        html = inline(html_frame.render({**ctx, "papers": whole}))
    return Rendered(subject=subject, text=text, html=html, raw_text_checked=checked)
