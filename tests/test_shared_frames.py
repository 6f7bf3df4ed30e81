"""The HTML frame is inlined once per shape of digest and filled in per reader
(digest.mail.frames). What a reader gets must read exactly as if their own frame had been
rendered and inlined: their name and links escaped, in the right places; and a frame that does
more with a reader's values than show them is made for each reader, as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import Config
from digest.mail import frames as shared_frames
from digest.mail.blocks import PaperBlocks
from digest.mail.compose import _ascii_html
from digest.mail.frames import Frames
from tests.test_paper_blocks import READERS, dom, edited, render, whole_message_templates

# Names a profile may carry: markup, quotes, an ampersand, a no-break space, accents.
NAMES = ['Ada <b>Byron</b> & "Co"', "O'Brien\xa0Zoë", "Bob"]


def shaped_like(cfg: Config, tmp_path: Path, *edits: tuple[str, str]) -> Config:
    return edited(cfg, tmp_path, "digest.html", *edits)


def test_readers_sharing_a_frame_read_as_messages_inlined_whole(
    workspace: Config, tmp_path: Path
) -> None:
    whole_cfg = workspace.model_copy(update={"templates_dir": whole_message_templates(tmp_path)})
    blocks, frames = PaperBlocks(), Frames()
    for order, name, trending in READERS + [([0, 1, 2], n, False) for n in NAMES]:
        got = render(workspace, order, name, trending, blocks, frames)
        want = render(whole_cfg, order, name, trending, None)
        assert dom(got.html) == dom(want.html), name
        assert got.text == want.text
        assert shared_frames._MINE["name"] not in got.html
    # One frame per shape (three papers, two, one trending), each made once and shared.
    assert len(frames._shapes) == 3 and all(frames._shapes.values())


def test_a_readers_name_is_escaped_in_the_shared_frame(workspace: Config) -> None:
    frames = Frames()
    render(workspace, [0, 1], "Bob", False, PaperBlocks(), frames)
    got = render(workspace, [2, 1], NAMES[0], False, PaperBlocks(), frames)
    assert "Hello Ada &lt;b&gt;Byron&lt;/b&gt; &amp; &quot;Co&quot;:" in got.html
    assert "<b>Byron" not in got.html
    # The footer names the reader as `a…@example.org` (see test_render), this reader's.
    assert "a…@example.org" in got.html and "b…@example.org" not in got.html


def test_a_frame_that_reads_a_papers_fields_is_made_for_each_reader(
    workspace: Config, tmp_path: Path
) -> None:
    cfg = shaped_like(workspace, tmp_path, ("{{ p.html }}", "{{ p.html }}<!-- {{ p.id }} -->"))
    frames = Frames()
    got = render(cfg, [1, 2], "Ada", False, PaperBlocks(), frames)
    assert "<!-- 2611.10001 -->" in got.html and "<!-- 2611.10002 -->" in got.html
    assert list(frames._shapes.values()) == [None]


def test_a_frame_that_filters_tests_or_measures_a_value_is_made_for_each_reader(
    workspace: Config, tmp_path: Path
) -> None:
    for n, (old, new, shown) in enumerate(
        [
            ("Hello {{ name }}:", "Hello {{ name|upper }}:", "Hello ADA:"),
            ("Hello {{ name }}:", "Hello {{ name }} ({{ name|length }}):", "Hello Ada (3):"),
            ("Hello {{ name }}:", "Hello{% if name == 'Ada' %} you{% endif %}:", "Hello you:"),
        ]
    ):
        cfg = shaped_like(workspace, tmp_path / str(n), (old, new))
        frames = Frames()
        got = render(cfg, [1], "Ada", False, PaperBlocks(), frames)
        assert shown in got.html
        assert frames._shareable is False


def test_a_frame_that_reads_the_profile_is_never_shared(workspace: Config, tmp_path: Path) -> None:
    keywords = "Hello {{ name }} ({{ interests.keywords|length }}):"
    cfg = shaped_like(workspace, tmp_path, ("Hello {{ name }}:", keywords))
    frames = Frames()
    render(cfg, [1], "Ada", False, PaperBlocks(), frames)
    assert frames._shapes == {} and frames._shareable is False


def test_a_shared_frame_vouches_for_its_style_block_only_when_it_closes_first_in_ascii(
    workspace: Config, tmp_path: Path
) -> None:
    blocks, frames = PaperBlocks(), Frames()
    for order, name, trending in READERS + [([0, 1, 2], n, False) for n in NAMES]:
        got = render(workspace, order, name, trending, blocks, frames)
        assert got.raw_text_checked
        # What compose makes of the HTML is the same whether it looks for itself or not.
        assert _ascii_html(got.html, True) == _ascii_html(got.html, False) is not None
    late_style = "</td></tr>\n</table>\n</body>"
    changed = {
        "a style block after the papers": (late_style, "<style>p{}</style>" + late_style),
        "a script left open at the end": ("</body>", "<script>\n</body>"),
        "non-ASCII before the style block closes": ("</style>", "/* é */</style>"),
    }
    for n, (why, (old, new)) in enumerate(changed.items()):
        cfg = shaped_like(workspace, tmp_path / str(n), (old, new))
        got = render(cfg, [0, 1], "Zoë", False, PaperBlocks(), Frames())
        assert not got.raw_text_checked, why
        assert _ascii_html(got.html) is None, why  # such HTML leaves as quoted-printable


def test_a_paper_block_with_a_style_element_is_looked_through_in_every_message(
    workspace: Config, tmp_path: Path
) -> None:
    style = "<style>.why{}</style>\n</td></tr>"
    cfg = edited(workspace, tmp_path, "digest_paper.html", ("</td></tr>", style))
    got = render(cfg, [0, 1], "Ada", False, PaperBlocks(), Frames())
    assert not got.raw_text_checked


def test_a_readers_non_ascii_name_before_the_style_block_closes_is_looked_through(
    workspace: Config, tmp_path: Path
) -> None:
    cfg = shaped_like(workspace, tmp_path, ("<title>", "<title>{{ name }}: "))
    frames = Frames()
    ascii_reader = render(cfg, [0, 1], "Ada", False, PaperBlocks(), frames)
    accented = render(cfg, [0, 1], "Zoë", False, PaperBlocks(), frames)
    assert ascii_reader.raw_text_checked and not accented.raw_text_checked
    # Non-ASCII before the style block closes: the HTML leaves as quoted-printable, as ever.
    assert _ascii_html(accented.html) is None
    assert _ascii_html(ascii_reader.html, True) == _ascii_html(ascii_reader.html) is not None


ALTERED = {
    "a filter block": [("Hello {{ name }}:", "{% filter lower %}Hello {{ name }}:{% endfilter %}")],
    "autoescape off": [
        ("Hello {{ name }}:", "{% autoescape false %}Hello {{ name }}:{% endautoescape %}")
    ],
    "a captured set tested": [
        ("<body>", "<body>{% set g %}{{ name }}{% endset %}"),
        ("Hello {{ name }}:", "Hello{% if 'Ada' in g %} you{% endif %} {{ name }}:"),
    ],
    "a macro": [
        ("<body>", "<body>{% macro hi() %}{{ name }}{% endmacro %}"),
        ("Hello {{ name }}:", "Hello {{ hi()|upper }}:"),
    ],
    "an attribute selector on the links": [
        (".foot a {", 'a[href^="http"] { font-weight: bold; }\n.foot a {')
    ],
}


@pytest.mark.parametrize("why", list(ALTERED))
def test_a_frame_that_alters_a_value_around_it_reads_as_rendered_for_the_reader(
    workspace: Config, tmp_path: Path, why: str
) -> None:
    cfg = shaped_like(workspace, tmp_path, *ALTERED[why])
    frames = Frames()
    render(cfg, [1], "Bob", False, PaperBlocks(), frames)
    for name in ("Ada", "Ada <i>x</i>"):
        shared = render(cfg, [1], name, False, PaperBlocks(), frames)
        alone = render(cfg, [1], name, False, PaperBlocks(), None)
        assert dom(shared.html) == dom(alone.html), name


@pytest.mark.parametrize("name", ["Ada\x00Byron", "Ada\rByron", "Ada\r\nByron", "A\x01B"])
def test_a_name_with_a_control_character_gets_a_frame_of_its_own(
    workspace: Config, tmp_path: Path, name: str
) -> None:
    whole = workspace.model_copy(update={"templates_dir": whole_message_templates(tmp_path)})
    frames = Frames()
    render(workspace, [0, 1], "Bob", False, PaperBlocks(), frames)
    got = render(workspace, [0, 1], name, False, PaperBlocks(), frames)
    assert dom(got.html) == dom(render(whole, [0, 1], name, False, None).html)
