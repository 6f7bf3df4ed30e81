"""Keeping a paper: each paper in the email links to its BibTeX (arXiv's, for an arXiv paper)
or to its DOI, beside the abstract and PDF links, as the message leaves for the SMTP server."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import (
    DEMO_DATA,
    SmtpServer,
    bodies,
    digest_here,
    write_profile,
    write_small_site,
)

FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">
  <title>Journal of Invented Results</title>
  <id>urn:uuid:keeping-links</id>
  <updated>2026-11-20T09:00:00Z</updated>
  <entry>
    <title>Invented catalysts, measured</title>
    <link href="https://journal.example.org/articles/42"/>
    <id>urn:uuid:entry-42</id>
    <prism:doi>10.5555/Invented.42</prism:doi>
    <updated>2026-11-19T10:00:00Z</updated>
    <summary>We measure the rates of invented compounds.</summary>
  </entry>
  <entry>
    <title>Invented compounds with a hostile DOI</title>
    <link href="https://journal.example.org/articles/43"/>
    <id>urn:uuid:entry-43</id>
    <prism:doi>10.5555/x"onmouseover="alert(1)&lt;b&gt;</prism:doi>
    <updated>2026-11-19T10:00:00Z</updated>
    <summary>Invented compounds again.</summary>
  </entry>
  <entry>
    <title>Invented compounds with no DOI at all</title>
    <link href="https://journal.example.org/articles/44"/>
    <id>urn:uuid:entry-44</id>
    <updated>2026-11-19T10:00:00Z</updated>
    <summary>Invented compounds once more.</summary>
  </entry>
</feed>
"""


def test_arxiv_papers_link_their_bibtex_and_journal_papers_their_doi(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    (tmp_path / "journal.atom").write_text(FEED, encoding="utf-8")
    write_small_site(
        tmp_path,
        smtp_server.port,
        f"""[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{(DEMO_DATA / "listing.xml").as_uri()}"
[[sources]]
name = "journal"
kind = "rss"
url = "file://journal.atom"
""",
    )
    write_profile(
        tmp_path / "subscribers",
        "ada",
        'email = "ada@example.org"\nmax_papers = 20\n'
        '[interests]\nkeywords = ["invented", "state space models"]\n',
    )
    done = digest_here("run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    [message] = smtp_server.received
    raw = message.data
    text, html = bodies(raw)
    text = text.replace("\r\n", "\n")
    # An arXiv paper: arXiv's own BibTeX, in both parts.
    arxiv = re.findall(r"https://arxiv\.org/abs/(\d{4}\.\d{5})\"", html)
    assert arxiv
    for pid in set(arxiv):
        assert f'href="https://arxiv.org/bibtex/{pid}"' in html
        assert f"   BibTeX: https://arxiv.org/bibtex/{pid}\n" in text
    # A journal paper: its DOI's page (the DOI as the feed wrote it, case kept).
    assert re.search(r'href="https://doi\.org/10\.5555/Invented\.42"[^>]*>DOI</a>', html)
    assert "   DOI: https://doi.org/10.5555/Invented.42\n" in text
    # A DOI with a quote and markup in it: quoted into the link, never markup of the message.
    assert "onmouseover=" not in raw.decode("ascii", "replace") and "<b>" not in html
    hostile = "https://doi.org/10.5555/x%22onmouseover%3D%22alert(1)%3Cb%3E"
    assert f'href="{hostile}"' in html and f"   DOI: {hostile}\n" in text
    # A paper with neither gets neither link, and no empty one.
    block = html[html.index("no DOI at all") :]
    block = block[: block.index("</td>")]
    assert "BibTeX" not in block and ">DOI<" not in block
    assert 'href=""' not in html


def test_in_the_atom_feed_a_paper_with_no_page_of_its_own_links_to_its_digest(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    import feedparser

    from digest.config import load_config
    from digest.store import Store
    from tests.test_web import WebServer, delivered, text_links

    test_arxiv_papers_link_their_bibtex_and_journal_papers_their_doi(tmp_path, smtp_server)
    cfg = load_config(tmp_path / "digest.toml")
    store = Store(cfg.database_url)
    server = WebServer(cfg, store)
    try:
        [url] = text_links(delivered(smtp_server, "ada@example.org"), "Follow as a feed (Atom)")
        parsed = feedparser.parse(server.client.get(server.local(url)).content)
        assert parsed.bozo == 0
        links = {e.title: e.link for e in parsed.entries}
        # The journal's page is on a host no configured feed is (a file:// feed names none):
        # the email gives no link to it, and the feed entry points at the digest instead.
        assert links["Invented compounds with no DOI at all"].startswith(
            "https://papers.example.org/d/"
        )
        assert links["Invented catalysts, measured"] == "https://doi.org/10.5555/Invented.42"
        assert all(link.startswith("https://") for link in links.values())
    finally:
        server.close()
        store.dispose()
