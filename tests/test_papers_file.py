# ruff: noqa: E501  (the fixtures are one field per line, as Zotero writes them)
"""The reference library as examples: `papers_file = "library.bib"` (BibTeX, RIS or CSL-JSON as
Zotero and the others export it) trains the reader's model. Entries with an arXiv id are looked
up as `papers` are; the others count through their own title and abstract. Through the real
CLI: `digest subscribers check` says what the file gave, `digest run` mails the digest."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from digest.store import Store
from tests.conftest import SmtpServer, bodies, digest_here, lines_by_file, write_profile

# As Zotero's own BibTeX export writes it: an arXiv preprint (url, DOI 10.48550, note), a
# journal article with a DOI and an abstract but no arXiv id, one with neither abstract nor id,
# and one with no title and no id (which cannot be used).
ZOTERO_BIB = r"""
@misc{gu_structured_2026,
	title = {Structured {State} {Spaces} {Revisited}: {Simple} {Diagonal} {Recurrences} for {Long} {Sequences}},
	shorttitle = {Structured {State} {Spaces} {Revisited}},
	url = {http://arxiv.org/abs/2609.04411},
	doi = {10.48550/arXiv.2609.04411},
	abstract = {We revisit structured state space models and show that diagonal recurrences suffice.},
	urldate = {2026-10-02},
	publisher = {arXiv},
	author = {Okafor, Mira and G{\"u}nther, Lena},
	month = sep,
	year = {2026},
	note = {arXiv:2609.04411 [cs]},
	keywords = {Computer Science - Machine Learning},
	file = {arXiv Fulltext PDF:/home/ada/Zotero/storage/ABCD1234/Okafor - 2026.pdf:application/pdf},
}

@article{lindqvist_selective_2026,
	title = {Selective state space models for million-token contexts: a field guide},
	volume = {12},
	issn = {1234-5678},
	url = {https://journal.example.org/articles/99},
	doi = {10.5555/jir.2026.99},
	abstract = {A guide to selective state space models for long context language modelling, with $O(n)$ recurrences and benchmarks of \emph{long context} retrieval.},
	language = {en},
	number = {3},
	journal = {Journal of Invented Results},
	author = {Lindqvist, Jonas},
	year = {2026},
	pages = {1--20},
}

@inproceedings{quint_memory_2025,
	title = {Recurrent memory for long sequences},
	booktitle = {Proceedings of the {Invented} {Conference}},
	author = {Quint, Rosa},
	year = {2025},
}

@misc{untitled_2025,
	author = {Nobody, A.},
	year = {2025},
}
"""

PROFILE = """\
email = "lib@example.org"
timezone = "UTC"
max_papers = 5
papers_file = "library.bib"
"""


def library_site(site: Path, text: str = ZOTERO_BIB, name: str = "library.bib") -> Path:
    subs = site / "subscribers"
    for old in subs.glob("*.toml"):
        old.unlink()
    (subs / name).write_text(text, encoding="utf-8")
    write_profile(subs, "lib", PROFILE.replace("library.bib", name))
    return subs


def test_a_zotero_bibtex_library_trains_a_model_and_check_says_what_it_gave(
    site: Path, smtp_server: SmtpServer
) -> None:
    library_site(site)
    checked = digest_here("subscribers", "check", cwd=site)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    line = next(x for x in checked.stdout.splitlines() if "papers_file" in x)
    assert line.startswith("note: ")  # information, not an error
    assert "lib.toml: papers_file: library.bib: 3 of 4 entries usable (1 with an arXiv id" in line
    assert "entry 4 (untitled_2025): no title and no arXiv id" in line
    done = digest_here("run", cwd=site)
    assert done.returncode == 0, done.stdout
    [message] = smtp_server.received
    text, _ = bodies(message.data)
    # A profile with nothing but its library: the state-space papers of the day come first,
    # each said to be close to a paper of the library.
    first = re.search(r"^1\. (.*)$", text, re.M)
    assert first is not None and "State Space" in first.group(1), text
    assert "(in your profile)" in text
    assert "2609.04411" not in text  # the library's own paper is not sent back
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        assert list(store.rank_models(["lib@example.org"])) == ["lib@example.org"]
        assert store.papers(["2609.04411"])  # looked up through the arXiv API source
    finally:
        store.dispose()


def test_ris_and_csl_json_exports_work_the_same(site: Path, smtp_server: SmtpServer) -> None:
    ris = (
        "TY  - JOUR\nTI  - Selective state space models for million-token contexts\n"
        "AU  - Lindqvist, Jonas\nAB  - Selective state space models for long context.\n"
        "DO  - 10.5555/jir.2026.99\nER  - \n\n"
        "TY  - PREPRINT\nTI  - Structured State Spaces Revisited\n"
        "UR  - http://arxiv.org/abs/2609.04411\nER  - \n"
    )
    csl = (
        '[{"id": "http://zotero.org/users/1/items/AB12", "type": "article-journal",'
        ' "title": "Selective state space models for million-token contexts",'
        ' "abstract": "Selective state space models for long context.",'
        ' "DOI": "10.5555/jir.2026.99"},'
        ' {"id": "x2", "type": "article", "title": "Structured State Spaces Revisited",'
        ' "number": "arXiv:2609.04411", "publisher": "arXiv"}]'
    )
    for text, name in ((ris, "library.ris"), (csl, "library.json")):
        library_site(site, text, name)
        checked = digest_here("subscribers", "check", cwd=site)
        assert checked.returncode == 0, checked.stderr
        assert f"papers_file: {name}: 2 of 2 entries usable (1 with an arXiv id" in checked.stdout


def test_an_edited_library_is_read_again_though_the_profile_is_unchanged(
    site: Path, smtp_server: SmtpServer
) -> None:
    subs = library_site(site)
    first = digest_here("subscribers", "check", cwd=site)
    assert "3 of 4 entries usable" in first.stdout
    library = subs / "library.bib"
    library.write_text(ZOTERO_BIB.split("@inproceedings")[0], encoding="utf-8")
    later = time.time() + 5  # a new modification time, whatever the file system's resolution
    os.utime(library, (later, later))
    second = digest_here("subscribers", "check", cwd=site)
    assert "2 of 2 entries usable" in second.stdout, second.stdout


def test_a_papers_file_outside_the_profile_directory_or_not_a_library_is_refused(
    site: Path,
) -> None:
    subs = library_site(site)
    (site / "secret.bib").write_text(ZOTERO_BIB)
    os.mkfifo(subs / "pipe.bib")
    (subs / "notes.txt").write_text("not a library")
    (subs / "broken.bib").write_bytes(b"@misc{x, title = {caf\xe9}}")
    cases = {
        "up": "../secret.bib",
        "abs": str(site / "secret.bib"),
        "pipe": "pipe.bib",
        "txt": "notes.txt",
        "none": "missing.bib",
        "latin": "broken.bib",
    }
    for name, target in cases.items():
        write_profile(subs, name, f'email = "{name}@example.org"\npapers_file = "{target}"\n')
    checked = digest_here("subscribers", "check", cwd=site)
    assert checked.returncode == 1
    said = lines_by_file(checked, ".toml: papers_file: ")
    assert "must be a file beside the profile" in said["up.toml"]
    assert "must be a file beside the profile" in said["abs.toml"]
    assert "pipe.bib': no such file" in said["pipe.toml"]  # not a regular file: never opened
    assert "export the library as .bib, .ris or .json" in said["txt.toml"]
    assert "'missing.bib': no such file" in said["none.toml"]
    assert "'broken.bib': not UTF-8 text (line 1): save it as UTF-8" in said["latin.toml"]
    assert "3 of 4 entries usable" in said["lib.toml"]  # the good one is fine
    assert "secret" not in checked.stdout.replace("secret.bib", "")  # no file content shown


def test_control_characters_in_a_library_never_reach_the_operators_terminal(
    site: Path, smtp_server: SmtpServer
) -> None:
    evil = "@misc{evil\x1b]0;pwned\x07\x1b[2J,\n  title = {A title},\n}\n" + ZOTERO_BIB
    library_site(site, evil.replace("@misc{untitled_2025", "@misc{bad\x1b[31m"))
    checked = digest_here("subscribers", "check", cwd=site)
    out = checked.stdout + checked.stderr
    assert "\x1b" not in out and "\x07" not in out
    assert "papers_file: library.bib: 4 of 5 entries usable" in out


def test_title_only_entries_are_left_out_where_the_library_has_enough_with_abstracts(
    site: Path, smtp_server: SmtpServer
) -> None:
    rich = "".join(
        f"@article{{a{n}, title = {{State space paper {n}}}, abstract = {{Selective state space "
        f"models, part {n}.}}, doi = {{10.5555/ssm.{n}}}}}\n"
        for n in range(5)
    )
    bare = "@book{goodfellow_deep_2016, title = {Deep {Learning}}, year = {2016}}\n"
    bare += "@article{schrodinger_1926, title = {An Undulatory Theory of the Mechanics of Atoms and Molecules}, doi = {10.1103/PhysRev.28.1049}}\n"
    library_site(site, rich + bare)
    checked = digest_here("subscribers", "check", cwd=site)
    assert "7 of 7 entries usable" in checked.stdout
    assert "2 with a title alone left out (the others say more)" in checked.stdout
    digest_here("run", cwd=site)
    [message] = smtp_server.received
    text, _ = bodies(message.data)
    assert "Deep Learning" not in text and "Undulatory" not in text


def test_a_profile_whose_only_interest_is_an_unusable_library_is_warned_about(
    site: Path, smtp_server: SmtpServer
) -> None:
    library_site(site, "@Article{broken, title = {oops\n")
    checked = digest_here("subscribers", "check", cwd=site)
    assert "0 of 1 entries usable" in checked.stdout
    assert "lib.toml: interests: no keywords, authors, categories, papers or usable" in (
        checked.stderr
    )


def test_a_batchs_library_texts_are_forgotten_once_it_is_planned(
    site: Path, smtp_server: SmtpServer
) -> None:
    from digest.config import load_config
    from digest.service.context import prepare, prepare_models
    from digest.service.picking import find_profile

    library_site(site)
    digest_here("ingest", cwd=site)
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    try:
        from datetime import UTC, datetime

        ctx = prepare(cfg, store, datetime.now(UTC))
        reader = find_profile(ctx, "lib@example.org")
        prepare_models(ctx, [reader])
        extra = ctx.ranker.vocab._extra
        assert any(pid.startswith("library:") for pid in extra)
        ctx.forget([reader])
        assert not any(pid.startswith("library:") for pid in extra)
    finally:
        store.dispose()
