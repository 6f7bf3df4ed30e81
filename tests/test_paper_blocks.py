"""Each paper's block is rendered and CSS-inlined once per run and shared by every reader who
gets it (digest.mail.blocks). What a reader gets must read exactly as if their message had been
rendered and inlined whole, the way templates without paper blocks still are: the same text
part, the same HTML once parsed, the reader's own reason, links and numbering in it, escaped."""

from __future__ import annotations

import shutil
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from digest.config import Config
from digest.mail import blocks as paper_blocks
from digest.mail.blocks import PaperBlocks
from digest.mail.frames import Frames
from digest.mail.render import Rendered, environment, render_digest
from digest.profiles import Profile
from digest.rank import Pick
from digest.store.schema import Paper
from tests.conftest import ROOT
from tests.test_render import HOSTILE

DAY = date(2026, 11, 23)
PAPERS = [
    HOSTILE,
    Paper(
        id="2611.10001",
        title=r"Sch\"odinger bridges for $\mu$-parametrised flows",
        abstract="An abstract with 50% of its words in " + "long-winded prose " * 30,
        authors=[r"G\"unther Krause", "Ana Lopez", "Bo Li", "Cy Ng", "Di Wu"],
        categories=["cs.LG", "stat.ML"],
        announced=DAY,
        abs_url="https://arxiv.org/abs/2611.10001",
        pdf_url="https://arxiv.org/pdf/2611.10001v1",
        hf_url="https://huggingface.co/papers/2611.10001",
        upvotes=1,
    ),
    Paper(
        id="2611.10002",
        title="A paper with no links at all",
        abstract="Short.",
        authors=["Zoë Ångström"],
        categories=[],
        announced=DAY,
    ),
]
REASONS = [
    "your keyword: attention",
    'a "quoted" <b>tag</b> & it\'s\xa0here, with a reason long enough to be wrapped over two '
    "lines of the plain-text part, and then some more",
    "close to “Structured State Spaces” (in your profile)",
]


class _Dom(HTMLParser):
    """The document as a browser reads it: tags, attributes and text with references decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[object] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.items.append(("start", tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.items.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.items.append(("text", data))


def dom(html: str) -> list[object]:
    parser = _Dom()
    parser.feed(html)
    parser.close()
    return parser.items


def copied_templates(tmp_path: Path) -> Path:
    out = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", out)
    return out


def edited(cfg: Config, tmp_path: Path, name: str, *edits: tuple[str, str]) -> Config:
    """The config with a copy of the templates (made once per tmp_path) in which template
    ``name`` has each (old, new) replaced; every old must be there."""
    out = tmp_path / "templates"
    if not out.exists():
        copied_templates(tmp_path)
    text = (out / name).read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (out / name).write_text(text)
    return cfg.model_copy(update={"templates_dir": out})


def flagged_per_reader(cfg: Config) -> list[tuple[str, int, Rendered]]:
    """Each reader's name, how many of their papers' reasons hold "keyword", and their digest,
    rendered with one shared set of blocks."""
    shared = PaperBlocks()
    out = []
    for order, name, trending in READERS:
        flagged = sum("keyword" in REASONS[(i + len(name)) % 3] for i in order)
        out.append((name, flagged, render(cfg, order, name, trending, shared)))
    return out


def whole_message_templates(tmp_path: Path) -> Path:
    """The templates as they were before paper blocks: each paper written out in the frame's
    loop. Operators' copies look like this, and must go on working."""
    out = copied_templates(tmp_path)
    html_block = (out / "digest_paper.html").read_text().split("#}\n", 1)[1]
    text_block = (out / "digest_paper.txt").read_text().split("{% endmacro %}\n", 1)[1]
    text_block = text_block.replace("{{ index }}", "{{ loop.index }}").replace(
        "{{ why(p.reason) }}", '{{ p.reason|wordwrap(70, false, "\\n        ", false) }}'
    )
    for name, block in (("digest.html", html_block), ("digest.txt", text_block)):
        frame = (out / name).read_text()
        hole = "{{ p.html }}" if name.endswith("html") else "{{ p.text }}"
        assert hole in frame
        (out / name).write_text(frame.replace(hole, block))
    (out / "digest_paper.html").unlink()
    (out / "digest_paper.txt").unlink()
    return out


def render(
    cfg: Config,
    order: list[int],
    name: str,
    trending: bool,
    blocks: PaperBlocks | None,
    frames: Frames | None = None,
) -> Rendered:
    local = "".join(c for c in name.lower() if c.isalnum()) or "reader"
    profile = Profile.model_construct(email=f"{local}@example.org", name=name, trending=trending)
    picks = [Pick(PAPERS[i], 1.0, REASONS[(i + len(name)) % 3]) for i in order]
    return render_digest(environment(cfg), cfg, profile, picks, DAY, blocks=blocks, frames=frames)


READERS = [
    ([0, 1, 2], "Ada", False),
    ([2, 0], "Bob", False),
    ([1], "Cy", True),
    ([1, 2], "Di", False),
]


def test_readers_sharing_paper_blocks_read_as_messages_inlined_whole(
    workspace: Config, tmp_path: Path
) -> None:
    whole_cfg = workspace.model_copy(update={"templates_dir": whole_message_templates(tmp_path)})
    shared = PaperBlocks()
    for order, name, trending in READERS:
        got = render(workspace, order, name, trending, shared)
        want = render(whole_cfg, order, name, trending, None)
        assert got.subject == want.subject
        assert got.text == want.text
        assert dom(got.html) == dom(want.html)
        assert "style=" in got.html and paper_blocks._TOKEN not in got.html + got.text
    assert len(shared.static) == 3  # each paper's context made once, for four readers


def test_a_readers_own_reason_and_numbering_are_filled_in_and_escaped(workspace: Config) -> None:
    shared = PaperBlocks()
    render(workspace, [0, 1, 2], "Ada", False, shared)
    got = render(workspace, [2, 1], "Bo", False, shared)  # reason 1 goes to paper 2, and so on
    assert "&lt;b&gt;tag&lt;/b&gt;" in got.html and "<b>tag" not in got.html
    assert "&quot;quoted&quot;" in got.html
    assert "1. A paper with no links at all" in got.text
    assert "2. Sch\u00f6dinger bridges for \u03bc-parametrised flows" in got.text
    assert 'Why: a "quoted" <b>tag</b> & it\'s\xa0here' in got.text  # plain text stays as is


def test_a_frame_that_hides_a_marker_from_the_inliner_inlines_the_whole_message(
    workspace: Config, tmp_path: Path
) -> None:
    changed = copied_templates(tmp_path)
    frame = (changed / "digest.html").read_text()
    # Inside a textarea the marker is text, and the serialiser escapes it: no marker to find.
    (changed / "digest.html").write_text(
        frame.replace("{{ p.html }}", "<tr><td><textarea>{{ p.html }}</textarea></td></tr>")
    )
    cfg = workspace.model_copy(update={"templates_dir": changed})
    got = render(cfg, [0, 1], "Ada", False, PaperBlocks())
    assert paper_blocks._TOKEN not in got.html
    assert got.html.count("<textarea>") == 2 and "style=" in got.html


def test_a_paper_template_that_changes_what_it_is_given_gets_each_readers_own_values(
    workspace: Config, tmp_path: Path
) -> None:
    changed = copied_templates(tmp_path)
    for name in ("digest_paper.html", "digest_paper.txt"):
        block = (changed / name).read_text()
        block = block.replace("{{ p.reason }}", "{{ p.reason|upper }}")
        block = block.replace("{{ why(p.reason) }}", "{{ p.reason|upper }}")
        (changed / name).write_text(block)
    cfg = workspace.model_copy(update={"templates_dir": changed})
    shared = PaperBlocks()
    for order, name, trending in READERS:
        got = render(cfg, order, name, trending, shared)
        assert paper_blocks._TOKEN.upper() not in got.html.upper() + got.text.upper()
        assert "YOUR KEYWORD: ATTENTION" in got.html + got.text or 0 not in order


def test_css_that_depends_on_a_papers_place_is_inlined_with_the_whole_message(
    workspace: Config, tmp_path: Path
) -> None:
    changed = copied_templates(tmp_path)
    frame = (changed / "digest.html").read_text()
    zebra = (
        "tr:nth-child(even) td.paper { background: #fafafa; }\n.paper + .paper { color: red; }\n"
    )
    (changed / "digest.html").write_text(frame.replace("</style>", zebra + "</style>", 1))
    whole = whole_message_templates(tmp_path / "whole")
    (whole / "digest.html").write_text(
        (whole / "digest.html").read_text().replace("</style>", zebra + "</style>", 1)
    )
    cfg = workspace.model_copy(update={"templates_dir": changed})
    whole_cfg = workspace.model_copy(update={"templates_dir": whole})
    shared = PaperBlocks()
    for order, name, trending in READERS:
        got = render(cfg, order, name, trending, shared)
        assert dom(got.html) == dom(render(whole_cfg, order, name, trending, None).html)
    assert "background: #fafafa" in render(cfg, [0, 1, 2], "Ada", False, shared).html


def test_a_paper_template_that_tests_a_readers_reason_gets_each_readers_own_values(
    workspace: Config, tmp_path: Path
) -> None:
    hook = ("Why:", '{% if "keyword" in p.reason %}[KW] {% endif %}Why:')
    cfg = edited(workspace, tmp_path, "digest_paper.html", hook)
    cfg = edited(workspace, tmp_path, "digest_paper.txt", hook)
    for name, flagged, got in flagged_per_reader(cfg):
        assert got.text.count("[KW] Why:") == flagged, name
        assert got.html.count("[KW] ") == flagged, name


@pytest.mark.parametrize(
    "template, hook",
    [
        (
            "digest_paper.html",
            '{% set r %}{{ p.reason }}{% endset %}{% if "keyword" in r %}[KW] {% endif %}Why:',
        ),
        ("digest_paper.html", '{% if "keyword" in p.get("reason") %}[KW] {% endif %}Why:'),
        ("digest_paper.txt", '{% if "keyword" in p.get("reason") %}[KW] {% endif %}Why:'),
        (
            "digest_paper.html",
            '{% macro why2(r) %}{% if "keyword" in r %}[KW] {% endif %}{% endmacro %}'
            "{{ why2(p.reason) }}Why:",
        ),
    ],
)
def test_a_paper_template_that_reads_a_reason_another_way_gets_each_readers_own_values(
    workspace: Config, tmp_path: Path, template: str, hook: str
) -> None:
    cfg = edited(workspace, tmp_path, template, ("Why:", hook))
    for name, flagged, got in flagged_per_reader(cfg):
        shown = got.html if template.endswith(".html") else got.text
        assert shown.count("[KW] ") == flagged, name


def test_an_html_block_whose_why_macro_tests_the_reason_gets_each_readers_own_values(
    workspace: Config, tmp_path: Path
) -> None:
    macro = '{% macro why(r) %}{% if "keyword" in r %}[KW] {% endif %}{{ r }}{% endmacro %}'
    cfg = edited(
        workspace,
        tmp_path,
        "digest_paper.html",
        ("{{ p.reason }}", "{{ why(p.reason) }}"),
        ("{#-", macro + "{#-"),
    )
    for name, flagged, got in flagged_per_reader(cfg):
        assert got.html.count("[KW] ") == flagged, name
