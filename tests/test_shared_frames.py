"""The HTML frame is inlined once per shape of digest and filled in per reader
(digest.mail.frames). What a reader gets must read exactly as if their own frame had been
rendered and inlined: their name and links escaped, in the right places; and a frame that does
more with a reader's values than show them is made for each reader, as before."""

from __future__ import annotations

from pathlib import Path

from digest.config import Config
from digest.mail import frames as shared_frames
from digest.mail.blocks import PaperBlocks
from digest.mail.frames import Frames
from tests.test_paper_blocks import READERS, copied_templates, dom, render, whole_message_templates

# Names a profile may carry: markup, quotes, an ampersand, a no-break space, accents.
NAMES = ['Ada <b>Byron</b> & "Co"', "O'Brien\xa0Zoë", "Bob"]


def shaped_like(cfg: Config, tmp_path: Path, old: str, new: str) -> Config:
    changed = copied_templates(tmp_path)
    frame = (changed / "digest.html").read_text()
    assert old in frame
    (changed / "digest.html").write_text(frame.replace(old, new))
    return cfg.model_copy(update={"templates_dir": changed})


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
    assert "adabbyronbco@example.org" in got.html and "bob@example.org" not in got.html


def test_a_frame_that_reads_a_papers_fields_is_made_for_each_reader(
    workspace: Config, tmp_path: Path
) -> None:
    cfg = shaped_like(workspace, tmp_path, "{{ p.html }}", "{{ p.html }}<!-- {{ p.id }} -->")
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
        cfg = shaped_like(workspace, tmp_path / str(n), old, new)
        frames = Frames()
        got = render(cfg, [1], "Ada", False, PaperBlocks(), frames)
        assert shown in got.html
        assert frames._shareable is False


def test_a_frame_that_reads_the_profile_is_never_shared(workspace: Config, tmp_path: Path) -> None:
    keywords = "Hello {{ name }} ({{ interests.keywords|length }}):"
    cfg = shaped_like(workspace, tmp_path, "Hello {{ name }}:", keywords)
    frames = Frames()
    render(cfg, [1], "Ada", False, PaperBlocks(), frames)
    assert frames._shapes == {} and frames._shareable is False
