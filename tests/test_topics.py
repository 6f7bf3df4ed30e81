"""Topics: a profile with several named `[[topics]]` gets a section per topic in one email, each
ranked by a model of its own; a paper appears once, under the topic that scored it highest;
"more/less like this" trains the topic it was shown under. Through the real CLI, a real SMTP
server and the real web app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import Config
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import (
    NOW,
    SmtpServer,
    bodies,
    digest_here,
    lines_by_file,
    write_profile,
    write_small_site,
)
from tests.test_web import WebServer, delivered

PROFILE = """\
email = "ada@example.org"
name = "Ada"
timezone = "Europe/London"
max_papers = 8
[interests]
exclude = ["prompt injection"]

[[topics]]
name = "Long sequences"
keywords = ["state space models", "long context"]
papers = ["2609.04411"]
max_papers = 4

[[topics]]
name = "Retrieval"
keywords = ["retrieval-augmented generation", "retrieval"]
categories = ["cs.IR"]
max_papers = 4
"""


def sections(text: str) -> dict[str, list[str]]:
    """The plain text's papers (arXiv ids) under each section heading."""
    out: dict[str, list[str]] = {}
    current = ""
    lines = text.replace("\r\n", "\n").splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"="}:
            current = line
        m = re.match(r"\s+Abstract: https://arxiv\.org/abs/(\S+)", line)
        if m:
            out.setdefault(current, []).append(m.group(1))
    return out


def only_ada(root: Path) -> None:
    for old in (root / "subscribers").glob("*.toml"):
        old.unlink()
    write_profile(root / "subscribers", "ada", PROFILE)


def test_a_two_topic_profile_gets_two_sections_and_no_paper_twice(
    site: Path, smtp_server: SmtpServer
) -> None:
    only_ada(site)
    done = digest_here("run", cwd=site)
    assert done.returncode == 0, done.stdout
    [message] = smtp_server.received
    text, html = bodies(message.data)
    found = sections(text)
    assert list(found) == ["Long sequences", "Retrieval"], text
    every = [pid for ids in found.values() for pid in ids]
    assert len(every) == len(set(every))  # no paper twice
    assert all(1 <= len(ids) <= 4 for ids in found.values())  # each topic's own max_papers
    assert "2609.04411" not in every  # a topic's example is not sent back to its reader
    assert ">Long sequences</td>" in html and ">Retrieval</td>" in html
    # The demo's retrieval paper goes under Retrieval, the state-space ones under the other.
    assert "2611.10003" in found["Retrieval"]
    assert "2611.10001" in found["Long sequences"]


def test_topic_names_come_through_as_text_in_both_parts(
    site: Path, smtp_server: SmtpServer
) -> None:
    only_ada(site)
    hostile = PROFILE.replace('"Retrieval"\nkeywords', '"<b>R&D</b> \\"quoted\\""\nkeywords')
    write_profile(site / "subscribers", "ada", hostile)
    digest_here("run", cwd=site)
    [message] = smtp_server.received
    text, html = bodies(message.data)
    assert '<b>R&D</b> "quoted"' in text
    assert '&lt;b&gt;R&amp;D&lt;/b&gt; "quoted"</td>' in html and "<b>R&D" not in html


@pytest.fixture
def ada_web(workspace: Config, store: Store) -> Iterator[WebServer]:
    only_ada(workspace.subscribers_dir.parent)
    server = WebServer(workspace, store)
    yield server
    server.close()


def test_less_like_this_trains_only_the_topic_the_paper_was_shown_under(
    workspace: Config, store: Store, smtp_server: SmtpServer, ada_web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    models = store.rank_models(["ada@example.org:0", "ada@example.org:1"])
    assert sorted(models) == ["ada@example.org:0", "ada@example.org:1"]  # one per topic
    before = {k: m.fingerprint for k, m in models.items()}
    msg = delivered(smtp_server, "ada@example.org")
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    # The first paper under "Retrieval", and its "Less like this" link.
    after_heading = text[text.index("Retrieval\n=========") :]
    less = re.search(r"Less like this: (\S+)", after_heading)
    assert less is not None
    assert ada_web.client.post(ada_web.local(less.group(1))).status_code == 200
    from digest.service.context import prepare, prepare_models
    from digest.service.picking import find_profile

    # The next planning retrains what changed.
    ctx = prepare(workspace, store, NOW)
    prepare_models(ctx, [find_profile(ctx, "ada@example.org")])
    after = {k: m.fingerprint for k, m in store.rank_models(list(before)).items()}
    assert after["ada@example.org:1"] != before["ada@example.org:1"]  # Retrieval learnt it
    assert after["ada@example.org:0"] == before["ada@example.org:0"]  # the other did not


def test_topic_mistakes_are_one_line_naming_the_file_and_the_key(site: Path) -> None:
    subs = site / "subscribers"
    write_profile(
        subs,
        "a",
        'email = "a@example.org"\n[interests]\nkeywords = ["x"]\n'
        '[[topics]]\nname = "T"\nkeywords = ["y"]\n',
    )
    write_profile(
        subs,
        "b",
        'email = "b@example.org"\n[[topics]]\nname = "Same"\nkeywords = ["x"]\n'
        '[[topics]]\nname = "same"\nkeywords = ["y"]\n',
    )
    write_profile(subs, "c", 'email = "c@example.org"\n[[topics]]\nkeywords = ["x"]\n')
    write_profile(subs, "d", 'email = "d@example.org"\n[[topics]]\nname = "T"\ncolour = "red"\n')
    checked = digest_here("subscribers", "check", cwd=site)
    assert checked.returncode == 1
    said = lines_by_file(checked)
    assert "a.toml: interests.keywords: with [[topics]], put keywords in a topic" in said["a.toml"]
    assert "b.toml: topics[1].name: 'same' is the name of topics[0] too" in said["b.toml"]
    assert "c.toml: topics[0].name: required key is missing" in said["c.toml"]
    assert "d.toml: topics[0].colour: unknown key" in said["d.toml"]


def test_topic_combinations_that_would_do_nothing_are_refused_with_a_hint(site: Path) -> None:
    subs = site / "subscribers"
    write_profile(
        subs,
        "t1",
        'email = "t1@example.org"\nmode = "trending"\n[[topics]]\nname = "A"\nkeywords = ["x"]\n',
    )
    write_profile(subs, "t2", 'email = "t2@example.org"\n[[topics]]\nname = "Only a name"\n')
    write_profile(subs, "t3", 'email = "t3@example.org"\n[topics]\nname = "A"\nkeywords = ["x"]\n')
    write_profile(
        subs,
        "t4",
        'email = "t4@example.org"\n[interests]\nkeywords = ["x"]\nfrequency = "weekly"\n',
    )
    write_profile(subs, "t5", 'email = "t5@example.org"\nfrequency = "Weekly"\n')
    checked = digest_here("subscribers", "check", cwd=site)
    said = lines_by_file(checked)
    assert 't1.toml: topics: not with mode = "trending"' in said["t1.toml"]
    assert "t2.toml: topics[0]: give it keywords, papers, authors or categories" in said["t2.toml"]
    assert "t3.toml: topics: write each topic as a [[topics]] table" in said["t3.toml"]
    assert "`frequency` belongs above [interests]" in said["t4.toml"]
    assert "t5.toml" not in said  # "Weekly" is weekly


@pytest.mark.shared_data
def test_a_full_topic_passes_its_next_papers_on_to_a_topic_with_room(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    from tests.conftest import SHARED

    listing = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
    arxiv = f'[[sources]]\nname = "arxiv"\nkind = "arxiv-rss"\nurl = "{listing.as_uri()}"\n'
    write_small_site(tmp_path, smtp_server.port, arxiv)
    # Two topics that want the same papers: the first fills up, the second takes the next.
    twins = "".join(
        f'[[topics]]\nname = "{n}"\nkeywords = ["language models"]\nmax_papers = 3\n'
        for n in ("First", "Second")
    )
    write_profile(tmp_path / "subscribers", "ada", 'email = "ada@example.org"\n' + twins)
    done = digest_here("run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    [message] = smtp_server.received
    found = sections(bodies(message.data)[0])
    assert list(found) == ["First", "Second"]
    assert len(found["First"]) == 3 and len(found["Second"]) == 3
    assert not set(found["First"]) & set(found["Second"])


def test_a_top_level_key_written_under_a_topic_gets_a_hint(site: Path) -> None:
    write_profile(
        site / "subscribers",
        "t6",
        'email = "t6@example.org"\n[[topics]]\nname = "A"\nkeywords = ["x"]\n'
        "trending_section = 3\n",
    )
    checked = digest_here("subscribers", "check", cwd=site)
    line = next(x for x in checked.stderr.splitlines() if "t6.toml" in x)
    assert "topics[0].trending_section: unknown key" in line
    assert "`trending_section` belongs above [[topics]], with `email`" in line


def test_section_blocks_of_many_readers_topic_names_stay_bounded_and_right(
    workspace: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.mail.blocks as blocks_module
    from digest.ingest import ingest_all
    from digest.profile_files import load_profiles
    from digest.service.context import prepare
    from digest.service.picking import pick_papers, render_for

    monkeypatch.setattr(blocks_module, "MAX_HEADED", 8)
    subs = workspace.subscribers_dir
    for old in subs.glob("*.toml"):
        old.unlink()
    for n in range(30):  # thirty readers, each naming their topic their own way
        text = PROFILE.replace("ada@", f"r{n}@").replace('"Long sequences"', f'"Reader {n}"')
        write_profile(subs, f"r{n:02d}", text)
    ingest_all(store, workspace, today=NOW.date())
    ctx = prepare(workspace, store, NOW)
    for profile in load_profiles(subs).profiles:
        standing = store.standings({profile.email: NOW.date()})[profile.email]
        picks, why = pick_papers(ctx, profile, standing)
        assert picks, why
        rendered = render_for(ctx, profile, picks, NOW.date())
        number = int(profile.email[1:].split("@")[0])
        assert f">Reader {number}</td>" in rendered.html
        assert f"Reader {number}\n" in rendered.text
        assert len(ctx.blocks._html_headed) <= 8 and len(ctx.blocks._text_headed) <= 8
