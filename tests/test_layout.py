"""Imports run one way, by stage: ground <- store <- ingest, rank <- mail <- service <- cli.

Read from the source with ast, so a new upward import fails here before it becomes a cycle."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

LAYER = {"store": 1, "ingest": 2, "rank": 2, "mail": 3, "service": 4, "cli": 5}
# Stage pairs that the layers would allow but that are kept apart anyway: ranking types its
# papers by a Protocol (digest.rank.features.RankPaper), so it runs on anything that has a title,
# an abstract, authors and categories, and a bench script needs no database to rank.
APART = {("rank", "store")}


def stage(module: str) -> str:
    """`digest.store.papers` -> "store"; a top-level module (digest.errors) is ground."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else "ground"


def imports() -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / "digest").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if module == "digest.__main__":
            continue  # `python -m digest` is the CLI's own entry point
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module in ("digest", *(f"digest.{s}" for s in LAYER)):
                    targets += [f"{node.module}.{a.name}" for a in node.names]
                found += [(module, t) for t in targets if t.startswith("digest")]
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("digest")]
    return found


def test_no_module_imports_a_later_stage_or_a_sibling_stage_and_rank_never_the_store() -> None:
    wrong = []
    for importer, imported in imports():
        a, b = stage(importer), stage(imported)
        if a == b or b == "ground":
            continue
        if a == "ground" or LAYER[b] >= LAYER[a] or (a, b) in APART:
            wrong.append(f"{importer} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_every_stage_package_says_what_it_offers_and_may_import() -> None:
    for name in LAYER:
        doc = ast.get_docstring(ast.parse((ROOT / "digest" / name / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), name
