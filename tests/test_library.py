"""A reader's reference library (papers_file) as Zotero, Better BibTeX, JabRef, Google Scholar
and Mendeley write it, read into example papers: arXiv ids, plain titles, abstracts, DOIs.

The fixtures are written as those tools write them. The hostile files (too large, not UTF-8,
binary, values of the wrong type, braces left open, nesting, far too many entries) each cost at
most their entry, or fail the whole file in one line that the reader can act on."""

# The fixtures are kept as the tools write them, one field to a line however long it is.
# ruff: noqa: E501

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.library import Library, LibraryEntry, LibraryError, read_library

ATTENTION_ABSTRACT = (
    "The dominant sequence transduction models are based on complex recurrent or convolutional "
    "neural networks in an encoder-decoder configuration. The best performing models also "
    "connect the encoder and decoder through an attention mechanism."
)

# Zotero 7's own BibTeX exporter: a preprint (DOI, link and note all name the arXiv id) and
# journal articles with a DOI and no arXiv id, one with an abstract and one without.
ZOTERO_BIBTEX = r"""
@misc{vaswani_attention_2017,
	title = {Attention {Is} {All} {You} {Need}},
	url = {http://arxiv.org/abs/1706.03762},
	doi = {10.48550/arXiv.1706.03762},
	abstract = {The dominant sequence transduction models are based on complex recurrent or convolutional neural networks in an encoder-decoder configuration. The best performing models also connect the encoder and decoder through an attention mechanism.},
	urldate = {2024-01-05},
	publisher = {arXiv},
	author = {Vaswani, Ashish and Shazeer, Noam and Parmar, Niki and Uszkoreit, Jakob and Jones, Llion and Gomez, Aidan N. and Kaiser, Lukasz and Polosukhin, Illia},
	month = aug,
	year = {2023},
	note = {arXiv:1706.03762 [cs]},
	keywords = {Computer Science - Computation and Language, Computer Science - Machine Learning},
	file = {arXiv Fulltext PDF:/Users/ada/Zotero/storage/8J2K4L9P/Vaswani et al. - 2023 - Attention Is All You Need.pdf:application/pdf;arXiv.org Snapshot:/Users/ada/Zotero/storage/QW3E5R7T/1706.html:text/html},
}

@article{lecun_deep_2015,
	title = {Deep learning},
	volume = {521},
	copyright = {2015 Springer Nature Limited},
	issn = {1476-4687},
	url = {https://www.nature.com/articles/nature14539},
	doi = {10.1038/nature14539},
	abstract = {Deep learning allows computational models that are composed of multiple processing layers to learn representations of data with multiple levels of abstraction. These methods have improved the state-of-the-art by 50\% \& more in speech recognition.},
	language = {en},
	number = {7553},
	urldate = {2024-01-05},
	journal = {Nature},
	author = {LeCun, Yann and Bengio, Yoshua and Hinton, Geoffrey},
	month = may,
	year = {2015},
	note = {Publisher: Nature Publishing Group},
	pages = {436--444},
	file = {Full Text PDF:/Users/ada/Zotero/storage/ZX81KD02/LeCun et al. - 2015 - Deep learning.pdf:application/pdf},
}

@article{jumper_highly_2021,
	title = {Highly accurate protein structure prediction with {AlphaFold}},
	volume = {596},
	issn = {1476-4687},
	url = {https://www.nature.com/articles/s41586-021-03819-2},
	doi = {10.1038/s41586-021-03819-2},
	language = {en},
	number = {7873},
	journal = {Nature},
	author = {Jumper, John and Evans, Richard and Pritzel, Alexander},
	month = aug,
	year = {2021},
	pages = {583--589},
}
"""

# Better BibTeX: biblatex (`eprinttype`) and BibTeX (`archiveprefix`, `primaryclass`) flavours,
# double protective braces, an old-style id with maths in its title, a versioned eprint.
BETTER_BIBTEX = r"""
@online{hoffmann2022,
  title = {Training {{Compute-Optimal Large Language Models}}},
  author = {Hoffmann, Jordan and Borgeaud, Sebastian and Mensch, Arthur},
  date = {2022-03-29},
  eprint = {2203.15556},
  eprinttype = {arxiv},
  eprintclass = {cs},
  doi = {10.48550/arXiv.2203.15556},
  url = {http://arxiv.org/abs/2203.15556},
  urldate = {2024-01-05},
  abstract = {We investigate the optimal model size and number of tokens for training a transformer language model under a given compute budget.},
  pubstate = {prepublished},
  keywords = {Computer Science - Computation and Language,Computer Science - Machine Learning},
  file = {/Users/ada/Zotero/storage/N3K2/Hoffmann et al. - 2022 - Training Compute-Optimal Large Language Models.pdf}
}

@misc{hu2021,
  title = {{{LoRA}}: {{Low-Rank Adaptation}} of {{Large Language Models}}},
  shorttitle = {{{LoRA}}},
  author = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip},
  year = {2021},
  month = oct,
  number = {arXiv:2106.09685},
  eprint = {2106.09685v2},
  primaryclass = {cs},
  publisher = {arXiv},
  urldate = {2024-01-05},
  archiveprefix = {arXiv},
  keywords = {Computer Science - Artificial Intelligence,Computer Science - Computation and Language}
}

@article{maldacena1999,
  title = {The {{Large}} \${{N}}\$ Limit of Superconformal Field Theories and Supergravity},
  author = {Maldacena, Juan},
  year = {1999},
  journal = {International Journal of Theoretical Physics},
  volume = {38},
  number = {4},
  pages = {1113--1133},
  eprint = {hep-th/9711200},
  archiveprefix = {arXiv},
  primaryclass = {hep-th},
  doi = {10.1023/A:1026654312961}
}

@article{smith2020pubmed,
  title = {A Trial of Something in Mice},
  author = {Smith, Jane},
  year = {2020},
  eprint = {32109013},
  eprinttype = {pubmed}
}
"""

# JabRef: an encoding comment, @String, TeX accents and maths, a JabRef-meta block.
JABREF = r"""% Encoding: UTF-8

@String{prl = {Physical Review Letters}}

@Article{Guenther2019,
  author    = {G{\"u}nther, Frank and Andr\'{e}, Marie},
  title     = {Quantum {Monte Carlo} for the {Schr\"{o}dinger} equation in $d=3$ dimensions},
  journal   = prl,
  year      = {2019},
  volume    = {122},
  pages     = {050401},
  doi       = {10.1103/PhysRevLett.122.050401},
  abstract  = {We study the \emph{ground state} of the {H}ubbard model --- a result in $O(n^2)$ time, for \'{e}lectrons near~$T_c$.},
}

@InProceedings{Dupre2021,
  author    = {Dupr\'{e}, Jos\'{e}},
  booktitle = {Proceedings of the 38th International Conference on Machine Learning},
  title     = {Caf\'{e}: fast {Bayesian} inference},
  year      = {2021},
  url       = {https://arxiv.org/pdf/2103.00020v3.pdf},
}

@Comment{jabref-meta: databaseType:bibtex;}

@Comment{jabref-meta: grouping:
0 AllEntriesGroup:;
1 StaticGroup:Reading\;0\;1\;0x8a8a8aff\;\;\;;
}
"""

# Google Scholar's "Cite > BibTeX": a preprint is a journal named "arXiv preprint arXiv:…".
SCHOLAR = """@article{kingma2014adam,
  title={Adam: A method for stochastic optimization},
  author={Kingma, Diederik P and Ba, Jimmy},
  journal={arXiv preprint arXiv:1412.6980},
  year={2014}
}
"""

# Zotero's RIS exporter (CRLF line ends as on Windows), a Mendeley-style record (T1, N2, LK),
# and a last record whose `ER  -` line was lost.
ZOTERO_RIS = (
    "TY  - PREPRINT\n"
    "TI  - Attention Is All You Need\n"
    "AU  - Vaswani, Ashish\n"
    "AU  - Shazeer, Noam\n"
    f"AB  - {ATTENTION_ABSTRACT}\n"
    "DA  - 2023/08/01/\n"
    "PY  - 2023\n"
    "DO  - 10.48550/arXiv.1706.03762\n"
    "DP  - arXiv.org\n"
    "PB  - arXiv\n"
    "UR  - http://arxiv.org/abs/1706.03762\n"
    "Y2  - 2024/01/05/10:22:17\n"
    "L1  - file:///Users/ada/Zotero/storage/8J2K4L9P/Vaswani et al. - 2023 - Attention.pdf\n"
    "L2  - http://arxiv.org/abs/1706.03762\n"
    "KW  - Computer Science - Computation and Language\n"
    "N1  - arXiv:1706.03762 [cs]\n"
    "ER  - \n"
    "\n"
    "TY  - JOUR\n"
    "TI  - Deep learning\n"
    "AU  - LeCun, Yann\n"
    "T2  - Nature\n"
    "AB  - Deep learning allows computational models that are composed of multiple\n"
    "processing layers to learn representations of data.\n"
    "DA  - 2015/05//\n"
    "PY  - 2015\n"
    "DO  - https://doi.org/10.1038/NATURE14539\n"
    "VL  - 521\n"
    "IS  - 7553\n"
    "SP  - 436\n"
    "EP  - 444\n"
    "UR  - https://www.nature.com/articles/nature14539\n"
    "ER  - \n"
    "\n"
    "TY  - JOUR\n"
    "ID  - Beltagy2020\n"
    "T1  - Longformer: The Long-Document Transformer\n"
    "A1  - Beltagy, Iz\n"
    "N2  - Transformer-based models are unable to process long sequences.\n"
    "LK  - https://arxiv.org/abs/2004.05150v2\n"
    "ER  - \n"
    "\n"
    "TY  - JOUR\n"
    "TI  - A record whose end line was lost\n"
    "UR  - https://arxiv.org/abs/2401.01234\n"
).replace("\n", "\r\n")

# Zotero's CSL JSON exporter: ids are item URIs, the arXiv id is in `number` with publisher
# arXiv, titles carry rich-text tags.
ZOTERO_CSL = [
    {
        "id": "http://zotero.org/users/local/kJ4nB2aQ/items/8J2K4L9P",
        "type": "article",
        "abstract": ATTENTION_ABSTRACT,
        "DOI": "10.48550/arXiv.1706.03762",
        "note": "arXiv:1706.03762 [cs]",
        "number": "arXiv:1706.03762",
        "publisher": "arXiv",
        "source": "arXiv.org",
        "title": "Attention Is All You Need",
        "URL": "http://arxiv.org/abs/1706.03762",
        "author": [{"family": "Vaswani", "given": "Ashish"}],
        "accessed": {"date-parts": [["2024", 1, 5]]},
        "issued": {"date-parts": [["2023", 8, 1]]},
    },
    {
        "id": "http://zotero.org/users/local/kJ4nB2aQ/items/ZX81KD02",
        "type": "article-journal",
        "container-title": "Nature",
        "DOI": "10.1038/nature14539",
        "ISSN": "1476-4687",
        "issue": "7553",
        "number": 7553,
        "page": "436-444",
        "title": "Deep learning",
        "URL": "https://www.nature.com/articles/nature14539",
        "volume": "521",
        "issued": {"date-parts": [["2015", 5]]},
    },
    {
        "id": "http://zotero.org/users/local/kJ4nB2aQ/items/QQ2",
        "type": "article",
        "title": "<i>Ab initio</i> spectra of H<sub>2</sub>O at $1<p<2$",
        "number": "2001.08361",
        "archive": "arXiv",
        "abstract": "We compute   spectra\nfrom first principles.",
    },
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def read(tmp_path: Path, name: str, text: str) -> Library:
    return read_library(write(tmp_path, name, text))


def by_key(library: Library) -> dict[str, LibraryEntry]:
    return {e.key: e for e in library.entries}


def error(path: Path) -> str:
    with pytest.raises(LibraryError) as raised:
        read_library(path)
    message = str(raised.value)
    assert "\n" not in message and str(path.name) not in message
    return message


def test_a_zotero_bibtex_export_yields_arxiv_ids_and_plain_titles(tmp_path: Path) -> None:
    library = read(tmp_path, "My Library.bib", ZOTERO_BIBTEX)
    assert library.total == 3 and not library.skipped
    attention, lecun, alphafold = library.entries
    assert attention == LibraryEntry(
        key="vaswani_attention_2017",
        arxiv_id="1706.03762",
        title="Attention Is All You Need",
        abstract=ATTENTION_ABSTRACT,
        doi="10.48550/arxiv.1706.03762",
    )
    # Journal articles: no arXiv id, kept for their title, with or without an abstract.
    assert (lecun.arxiv_id, lecun.title, lecun.doi) == (
        None,
        "Deep learning",
        "10.1038/nature14539",
    )
    assert lecun.abstract.endswith(
        "improved the state-of-the-art by 50% & more in speech recognition."
    )
    assert alphafold.title == "Highly accurate protein structure prediction with AlphaFold"
    assert (alphafold.arxiv_id, alphafold.abstract) == (None, "")


def test_better_bibtex_eprints_give_the_id_without_its_version_and_only_for_arxiv(
    tmp_path: Path,
) -> None:
    library = read(tmp_path, "library.bib", BETTER_BIBTEX)
    entries = by_key(library)
    assert entries["hoffmann2022"].arxiv_id == "2203.15556"
    assert entries["hoffmann2022"].title == "Training Compute-Optimal Large Language Models"
    assert entries["hu2021"].arxiv_id == "2106.09685"
    assert entries["hu2021"].title == "LoRA: Low-Rank Adaptation of Large Language Models"
    assert entries["maldacena1999"].arxiv_id == "hep-th/9711200"
    assert entries["maldacena1999"].title == (
        "The Large $N$ Limit of Superconformal Field Theories and Supergravity"
    )
    # A PubMed id in `eprint` is not an arXiv id: the paper is kept by its title.
    assert entries["smith2020pubmed"].arxiv_id is None
    assert entries["smith2020pubmed"].title == "A Trial of Something in Mice"


def test_a_jabref_file_reads_tex_accents_and_maths_and_its_comments_are_not_entries(
    tmp_path: Path,
) -> None:
    library = read(tmp_path, "references.bib", JABREF)
    assert library.total == 2 and not library.skipped
    guenther, dupre = library.entries
    assert guenther.title == "Quantum Monte Carlo for the Schrödinger equation in d=3 dimensions"
    assert guenther.abstract == (
        "We study the ground state of the Hubbard model — a result in O(n²) time, "
        "for électrons near T_c."
    )
    assert guenther.doi == "10.1103/physrevlett.122.050401" and guenther.arxiv_id is None
    assert (dupre.title, dupre.arxiv_id) == ("Café: fast Bayesian inference", "2103.00020")


def test_a_google_scholar_entry_finds_the_id_in_its_journal_name(tmp_path: Path) -> None:
    [adam] = read(tmp_path, "scholar.bib", SCHOLAR).entries
    assert (adam.key, adam.arxiv_id) == ("kingma2014adam", "1412.6980")
    assert adam.title == "Adam: A method for stochastic optimization"


def test_a_zotero_ris_export_yields_ids_titles_abstracts_and_the_record_missing_its_end(
    tmp_path: Path,
) -> None:
    library = read(tmp_path, "export.ris", ZOTERO_RIS)
    assert library.total == 4 and not library.skipped
    attention, lecun, longformer, last = library.entries
    assert (attention.arxiv_id, attention.title) == ("1706.03762", "Attention Is All You Need")
    assert attention.abstract == ATTENTION_ABSTRACT
    assert attention.doi == "10.48550/arxiv.1706.03762" and attention.key == "entry 1"
    # A wrapped abstract is one line of text; the DOI given as a link is the bare DOI.
    assert lecun.abstract == (
        "Deep learning allows computational models that are composed of multiple processing "
        "layers to learn representations of data."
    )
    assert (lecun.arxiv_id, lecun.doi) == (None, "10.1038/nature14539")
    assert longformer == LibraryEntry(
        key="Beltagy2020",
        arxiv_id="2004.05150",
        title="Longformer: The Long-Document Transformer",
        abstract="Transformer-based models are unable to process long sequences.",
        doi=None,
    )
    assert (last.arxiv_id, last.title) == ("2401.01234", "A record whose end line was lost")


def test_a_zotero_csl_json_export_yields_ids_plain_titles_and_abstracts(tmp_path: Path) -> None:
    library = read(tmp_path, "My Library.json", json.dumps(ZOTERO_CSL, indent="\t"))
    assert library.total == 3 and not library.skipped
    attention, lecun, water = library.entries
    assert attention.key == "http://zotero.org/users/local/kJ4nB2aQ/items/8J2K4L9P"
    assert (attention.arxiv_id, attention.abstract) == ("1706.03762", ATTENTION_ABSTRACT)
    assert (lecun.arxiv_id, lecun.doi, lecun.abstract) == (None, "10.1038/nature14539", "")
    # Rich-text tags go, the maths stays as written; the id comes from `number` + `archive`.
    assert water.title == "Ab initio spectra of H2O at $1<p<2$"
    assert water.arxiv_id == "2001.08361"
    assert water.abstract == "We compute spectra from first principles."
    # The same items wrapped as {"items": [...]}, sniffed from the content.
    wrapped = read(tmp_path, "export.txt", json.dumps({"items": ZOTERO_CSL}))
    assert wrapped.entries == library.entries


def test_an_entry_with_neither_title_nor_arxiv_id_is_skipped_with_its_key_and_number(
    tmp_path: Path,
) -> None:
    text = SCHOLAR + "@misc{smith2020,\n  author = {Smith, Jane},\n  year = {2020}\n}\n"
    text += "@misc{onlyid, eprint = {2312.00752}, archiveprefix = {arXiv}}\n"
    library = read(tmp_path, "library.bib", text)
    assert library.skipped == ["entry 2 (smith2020): no title and no arXiv id"]
    assert [(e.key, e.arxiv_id, e.title) for e in library.entries] == [
        ("kingma2014adam", "1412.6980", "Adam: A method for stochastic optimization"),
        ("onlyid", "2312.00752", ""),
    ]
    assert library.total == 3


def test_the_same_paper_twice_is_kept_once_and_the_repeat_reported(tmp_path: Path) -> None:
    text = (
        ZOTERO_BIBTEX
        + SCHOLAR
        + r"""
@article{vaswani2017attention,
  title={Attention is all you need},
  author={Vaswani, Ashish},
  journal={Advances in neural information processing systems},
  year={2017}
}
@misc{attention_again, title = {Another name}, url = {https://arxiv.org/abs/1706.03762v7}}
@article{lecun_again, title = {Deep Learning (Reprint)}, doi = {10.1038/NATURE14539}}
@misc{vaswani_attention_2017, title = {Adam: A Method for Stochastic Optimization},
  eprint = {1412.6980}}
@misc{deep1, title = {Deep learning}, eprint = {2401.00001}, archiveprefix = {arXiv}}
"""
    )
    library = read(tmp_path, "library.bib", text)
    assert library.skipped == [
        "entry 5 (vaswani2017attention): same paper as entry 1",
        "entry 6 (attention_again): same paper as entry 1",
        "entry 7 (lecun_again): same paper as entry 2",
        # A key used twice is still read, and found to be the Adam paper again.
        "entry 8 (vaswani_attention_2017): same paper as entry 4",
        "entry 9 (deep1): same paper as entry 2",
    ]
    assert library.total == 9 and len(library.entries) == 4


def test_two_arxiv_papers_that_share_a_title_are_both_kept(tmp_path: Path) -> None:
    text = (
        "@misc{a, title = {Deep learning}, eprint = {2401.00001}, archiveprefix = {arXiv}}\n"
        "@misc{b, title = {Deep Learning}, eprint = {2402.00002}, archiveprefix = {arXiv}}\n"
    )
    library = read(tmp_path, "library.bib", text)
    assert [e.arxiv_id for e in library.entries] == ["2401.00001", "2402.00002"]


def test_braces_left_open_mid_file_lose_that_entry_and_keep_the_ones_after(
    tmp_path: Path,
) -> None:
    text = (
        SCHOLAR
        + (
            "@article{broken2020,\n"
            "  title = {An unbalanced {brace in the title,\n"
            "  year = {2020}\n"
            "}\n"
            '@article{quote2021, title = "A quote never closed, year = 2021}\n'
        )
        + ZOTERO_BIBTEX
    )
    library = read(tmp_path, "library.bib", text)
    assert library.skipped == [
        "entry 2 (broken2020): malformed BibTeX at line 7 (a brace or quote left open)",
        "entry 3 (quote2021): malformed BibTeX at line 11 (a brace or quote left open)",
    ]
    assert [e.key for e in library.entries] == [
        "kingma2014adam",
        "vaswani_attention_2017",
        "lecun_deep_2015",
        "jumper_highly_2021",
    ]
    assert library.total == 6


def test_deeply_nested_braces_read_as_plain_text(tmp_path: Path) -> None:
    # Deeper than pylatexenc's recursion can go: the title is still readable.
    title = "\\emph{" + "{" * 400 + "Nested $x^2$" + "}" * 400 + "} title"
    abstract = "{" * 5000 + "Nested" + "}" * 5000
    text = f"@misc{{deep, title = {{{title}}}, abstract = {{{abstract}}}}}\n" + SCHOLAR
    library = read(tmp_path, "library.bib", text)
    assert [e.title for e in library.entries] == [
        "Nested $x²$ title",
        "Adam: A method for stochastic optimization",
    ]
    assert library.entries[0].abstract == "Nested"


def test_long_titles_and_abstracts_are_cut_to_their_bounds(tmp_path: Path) -> None:
    items = [{"id": "long", "title": "word " * 1000, "abstract": "text " * 10_000}]
    [entry] = read(tmp_path, "long.json", json.dumps(items)).entries
    assert len(entry.title) == 1_000 and len(entry.abstract) == 20_000
    title, abstract = "Wörd " * 1000, "T\\^ext " * 10_000  # TeX's accent: Têxt
    [entry] = read(
        tmp_path, "long.bib", f"@misc{{long, title={{{title}}}, abstract={{{abstract}}}}}"
    ).entries
    assert len(entry.title) == 1_000 and entry.title.startswith("Wörd Wörd")
    assert len(entry.abstract) == 20_000 and entry.abstract.startswith("Têxt Têxt")


def test_a_file_over_20_mb_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "everything.bib"
    path.write_bytes(SCHOLAR.encode() + b"%" * 21_000_000)
    assert error(path) == "larger than 20 MB (21 MB)"


def test_a_file_not_in_utf8_names_the_line_and_asks_for_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.bib"
    path.write_bytes((SCHOLAR + "@misc{x, title = {Caf\xe9}}\n").encode("latin-1"))
    assert error(path) == "not UTF-8 text (line 7): save it as UTF-8"
    path.write_bytes((SCHOLAR + "@misc{x, title = {Café}}\n").encode("utf-16"))
    assert error(path) == "UTF-16 text: save it as UTF-8"


def test_a_utf8_byte_order_mark_is_read_as_nothing(tmp_path: Path) -> None:
    path = tmp_path / "windows.bib"
    path.write_bytes(b"\xef\xbb\xbf" + SCHOLAR.encode())
    assert [e.key for e in read_library(path).entries] == ["kingma2014adam"]


def test_an_empty_file_or_one_without_entries_is_refused(tmp_path: Path) -> None:
    assert error(write(tmp_path, "empty.bib", "")) == "the file is empty"
    assert error(write(tmp_path, "blank.ris", " \n\n")) == "the file is empty"
    no_entries = "no entries in it: is it really BibTeX (.bib), RIS (.ris) or CSL-JSON (.json)?"
    assert error(write(tmp_path, "notes.bib", "% just a comment\n@Comment{x}\n")) == no_entries
    assert error(write(tmp_path, "empty.json", "[]")) == no_entries


def test_a_bib_that_is_binary_garbage_is_refused_as_binary(tmp_path: Path) -> None:
    path = tmp_path / "library.bib"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(0).randbytes(4096))
    assert error(path) == "a binary file, not BibTeX (.bib), RIS (.ris) or CSL-JSON (.json)"


def test_a_missing_file_or_a_directory_is_refused_without_its_path(tmp_path: Path) -> None:
    assert error(tmp_path / "gone.bib") == "No such file or directory"
    (tmp_path / "folder.bib").mkdir()
    assert error(tmp_path / "folder.bib") == "Is a directory"


def test_a_file_of_no_known_format_is_refused_naming_the_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "papers.txt", "Attention is all you need\nDeep learning\n")
    assert error(path) == "not BibTeX (.bib), RIS (.ris) or CSL-JSON (.json)"


def test_the_format_is_sniffed_when_the_extension_says_nothing(tmp_path: Path) -> None:
    assert read(tmp_path, "a.txt", SCHOLAR).entries[0].arxiv_id == "1412.6980"
    assert read(tmp_path, "b", ZOTERO_RIS).total == 4
    assert read(tmp_path, "c.csl", json.dumps(ZOTERO_CSL)).total == 3


def test_json_values_of_the_wrong_type_skip_only_their_entry(tmp_path: Path) -> None:
    items: list[object] = [
        {"id": 1, "title": 42},
        {"id": "b", "title": ["Attention", "Is All"]},
        {"id": "c", "title": "Fine", "abstract": {"text": "nested"}},
        {"id": "d", "title": "Also fine", "DOI": None, "URL": None, "abstract": None},
        {"id": ["x"], "title": "Keyless", "URL": 3},
        {"id": True, "title": "Boolean id", "number": 2001.08361, "archive": "arXiv"},
        None,
        "a string",
        17,
        [],
    ]
    library = read(tmp_path, "hostile.json", json.dumps(items))
    assert library.skipped == [
        "entry 1 (1): title is a number, not text",
        "entry 2 (b): title is a list, not text",
        "entry 3 (c): abstract is an object, not text",
        "entry 5: URL is a number, not text",
        "entry 7: null, not an entry",
        "entry 8: text, not an entry",
        "entry 9: a number, not an entry",
        "entry 10: a list, not an entry",
    ]
    assert [(e.key, e.title, e.arxiv_id) for e in library.entries] == [
        ("d", "Also fine", None),
        ("entry 6", "Boolean id", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"title": "x"},', "not valid JSON (line 1, column 17: Expecting value)"),
        ('{"title": "one item"}', "CSL-JSON is a list of items; this is an object"),
        ("[" * 100_000 + "]" * 100_000, "not usable JSON (nested too deeply)"),
        ("[" + "9" * 5000 + "]", "not usable JSON (Exceeds the limit (4300 digits)"),
        ("[" + "{}," * 1_000_001 + "{}]", "more than 1,000,000 JSON objects and lists"),
    ],
)
def test_json_that_cannot_be_a_library_is_refused_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    assert error(write(tmp_path, "library.json", text)).startswith(message)


def numbered_bibtex(n: int) -> str:
    return "".join(f"@misc{{k{i}, title = {{Paper number {i}}}}}\n" for i in range(n))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("many.bib", "@Comment{jabref-meta: databaseType:bibtex;}\n" + numbered_bibtex(10_003)),
        (
            "many.ris",
            "".join(f"TY  - JOUR\nTI  - Paper number {i}\nER  - \n" for i in range(10_003)),
        ),
        ("many.json", json.dumps([{"title": f"Paper number {i}"} for i in range(10_003)])),
    ],
)
def test_only_the_first_10000_entries_are_read_and_the_rest_counted(
    tmp_path: Path, name: str, text: str
) -> None:
    library = read(tmp_path, name, text)
    assert library.total == 10_003 and len(library.entries) == 10_000
    assert library.entries[-1].title == "Paper number 9999"
    assert library.skipped == ["3 entries past the first 10,000 were not read"]


def test_a_bibtex_file_of_20_mb_of_block_starts_is_read_only_to_its_bound(tmp_path: Path) -> None:
    # bibtexparser alone takes 70 s and 7 GB on this; only the first 10,000 reach it.
    path = write(tmp_path, "flood.bib", "@a{\n" * 4_999_000)
    library = read_library(path)
    assert library.total == 4_999_000 and not library.entries
    assert library.skipped[0] == "entry 1: malformed BibTeX at line 1 (no comma after its key)"
    assert library.skipped[-1] == "4,989,000 entries past the first 10,000 were not read"
    fields = "@misc{x," + "a=1," * 600_000 + "}\n"
    assert error(write(tmp_path, "fields.bib", fields)) == (
        "more than 500,000 fields: not a reference library"
    )


def test_a_ris_abstract_wrapped_over_a_million_lines_is_read_in_linear_time(
    tmp_path: Path,
) -> None:
    text = "TY  - JOUR\nTI  - Wrapped\nAB  - start\n" + "word\n" * 1_000_000 + "ER  - \n"
    [entry] = read(tmp_path, "wrapped.ris", text).entries
    assert entry.abstract.startswith("start word word") and len(entry.abstract) == 20_000


def zotero_bibtex(n: int) -> str:
    """A Zotero export of n arXiv preprints, as many libraries are: a tenth of the titles and
    a quarter of the abstracts with maths (escaped as Zotero escapes it), some accents."""
    rng = random.Random(7)
    words = [
        "transformer",
        "attention",
        "graph",
        "network",
        "diffusion",
        "sparse",
        "quantum",
        "spin",
        "lattice",
    ]
    out = []
    for i in range(n):
        pid = f"{2300 + i // 20_000}.{i % 20_000:05d}"
        title = "{Learning} " + " ".join(rng.choices(words, k=8))
        title += " in $O(n^2)$ time" if i % 10 == 0 else ""
        title += ' after G{\\"u}nther' if i % 7 == 0 else ""
        abstract = " ".join(rng.choices(words, k=150))
        abstract += " within \\$O(n{\\textasciicircum}2)\\$ steps" if i % 4 == 0 else ""
        out.append(
            f"@misc{{key_{i}_2023,\n\ttitle = {{{title}}},\n"
            f"\turl = {{http://arxiv.org/abs/{pid}}},\n\tdoi = {{10.48550/arXiv.{pid}}},\n"
            f"\tabstract = {{{abstract} for 50\\% \\& more.}},\n\turldate = {{2024-01-05}},\n"
            "\tpublisher = {arXiv},\n\tauthor = {Vaswani, Ashish and Shazeer, Noam},\n"
            f"\tmonth = jun,\n\tyear = {{2023}},\n\tnote = {{arXiv:{pid} [cs]}},\n"
            "\tkeywords = {Computer Science - Machine Learning},\n"
            f"\tfile = {{arXiv Fulltext PDF:/Users/ada/Zotero/storage/A{i}/x.pdf:application/pdf}},\n"
            "}\n\n"
        )
    return "".join(out)


def test_a_zotero_library_of_10000_preprints_is_read_whole(tmp_path: Path) -> None:
    library = read(tmp_path, "big.bib", zotero_bibtex(10_000))
    assert library.total == 10_000 and len(library.entries) == 10_000 and not library.skipped
    first = library.entries[0]
    assert first.arxiv_id == "2300.00000"
    assert first.title.endswith(" in O(n²) time after Günther")
    # pylatexenc reads Zotero's `{\\textasciicircum}` as the modifier letter ˆ.
    assert first.abstract.endswith(" within $O(nˆ2)$ steps for 50% & more.")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "title",
                        "abstract",
                        "DOI",
                        "URL",
                        "note",
                        "number",
                        "archive",
                        "publisher",
                        "container-title",
                    ]
                ),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: (
                        st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                    ),
                    max_leaves=5,
                ),
            ),
            st.integers(),
            st.none(),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_no_csl_json_item_of_any_shape_escapes_its_entry(
    tmp_path: Path, items: list[object]
) -> None:
    library = read(tmp_path, "fuzz.json", json.dumps(items))
    assert library.total == len(items)
    assert len(library.entries) + len(library.skipped) == len(items)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(noise=st.text(alphabet='@{}()"=,#%\\$~ \nabcTY-ER', max_size=200))
def test_no_bibtex_or_ris_text_of_any_shape_raises_more_than_a_one_line_error(
    tmp_path: Path, noise: str
) -> None:
    for name in ("fuzz.bib", "fuzz.ris"):
        try:
            library = read(tmp_path, name, SCHOLAR + noise)
        except LibraryError as e:
            assert "\n" not in str(e)
        else:
            assert len(library.entries) + len(library.skipped) <= library.total + 1
