"""Golden files for what people read: the records parsed from the demo listing, and Ada's digest
(subject, text part, HTML part) at a fixed time. A change to a parser or a template shows as a
unified diff; when the change is meant, `DIGEST_UPDATE_GOLDEN=1 pytest tests/test_golden.py`
rewrites the files, and the diff is reviewed in the commit."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from pathlib import Path

import pytest

from digest.config import Config
from digest.ingest import arxiv_rss
from digest.service.pipeline import preview
from digest.store import Store
from tests.conftest import DEMO_DATA, NOW, demo_sources

GOLDEN = Path(__file__).resolve().parent / "golden"


def normalised(text: str) -> str:
    """Volatile parts replaced: link tokens, Message-IDs, MIME boundaries."""
    text = re.sub(r"/([ufd])/[A-Za-z0-9_\-.]+", r"/\1/<token>", text)
    text = re.sub(r"<[^<>@\s]+@[^<>\s]+>", "<message-id>", text)
    return re.sub(r"=+_[0-9]+==", "<boundary>", text)


def check(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DIGEST_UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"tests/golden/{name}",
                "as made now",
            )
        )
        pytest.fail(f"{name} differs from its golden file:\n{diff}", pytrace=False)


def test_the_demo_listing_parses_to_its_golden_records() -> None:
    src = demo_sources()[0]
    parsed = arxiv_rss.parse((DEMO_DATA / "listing.xml").read_bytes(), src, NOW.date())
    records = [
        {k: v for k, v in dataclasses.asdict(r).items() if k != "dropped"}
        for r in sorted(parsed.records, key=lambda r: r.id)
    ]
    check(
        "demo_records.json",
        json.dumps(records, indent=1, ensure_ascii=False, sort_keys=True, default=str) + "\n",
    )


def test_adas_digest_reads_as_its_golden_subject_text_and_html(
    workspace: Config, store: Store
) -> None:
    from digest.ingest import ingest_all

    ingest_all(store, workspace, today=NOW.date())
    shown = preview(workspace, store, "ada@example.org", now=NOW)
    check("ada_subject.txt", normalised(shown.rendered.subject) + "\n")
    check("ada_text.txt", normalised(shown.rendered.text))
    check("ada.html", normalised(shown.rendered.html))


def test_a_one_word_change_to_a_template_fails_with_a_diff(
    workspace: Config, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.delenv("DIGEST_UPDATE_GOLDEN", raising=False)  # never rewrite from this one

    from digest.ingest import ingest_all
    from tests.conftest import ROOT

    changed = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", changed)
    text = (changed / "digest.txt").read_text()
    (changed / "digest.txt").write_text(text.replace("new paper", "fresh paper", 1))
    cfg = workspace.model_copy(update={"templates_dir": changed})
    ingest_all(store, cfg, today=NOW.date())
    shown = preview(cfg, store, "ada@example.org", now=NOW)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)-Here are 6 new.*\+Here are 6 fresh"):
        check("ada_text.txt", normalised(shown.rendered.text))
