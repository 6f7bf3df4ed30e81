from __future__ import annotations

import click

from digest.cli import cli
from tests.conftest import ROOT


def commands(group: click.Group, prefix: str = "digest") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += commands(cmd, f"{prefix} {name}")
        else:
            out.append(f"{prefix} {name}")
    return out


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in commands(cli) if f"`{c}" not in readme]
    assert not missing


def test_every_command_has_help_text() -> None:
    ctx = click.Context(cli)
    for name, cmd in cli.commands.items():
        assert cmd.get_short_help_str(), name
    assert cli.get_help(ctx)


def test_the_systemd_unit_scores_3_or_better_with_systemd_analyze() -> None:
    import re
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze (systemd) is needed to score deploy/digest.service"
    ran = subprocess.run(
        [tool, "security", "--offline=true", str(ROOT / "deploy" / "digest.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for digest.service: ([\d.]+)", ran.stdout)
    assert found, ran.stdout + ran.stderr
    assert float(found.group(1)) <= 3.0, ran.stdout


def test_every_test_the_docs_name_exists() -> None:
    """docs/reliability.md names the test for each case; a renamed or removed test shows here."""
    import re

    text = (ROOT / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`(rel|test_\w+\.py)::(test_\w+?)(…)?`", text)
    assert len(cited) > 30
    for file, name, cut in cited:
        path = ROOT / "tests" / ("test_reliability.py" if file == "rel" else file)
        source = path.read_text()
        pattern = rf"def {re.escape(name)}" + (r"\w*" if cut else r"\b")
        assert re.search(pattern, source), f"{file}::{name} in docs/reliability.md"
    for file in set(re.findall(r"`(test_\w+\.py)`", text)):
        assert (ROOT / "tests" / file).exists(), file
    for script in set(re.findall(r"`bench/(\w+\.py)`", text)):
        assert (ROOT / "bench" / script).exists(), script


def test_every_profile_key_is_in_the_readme_and_the_example_profile() -> None:
    from pydantic import BaseModel

    from digest.profiles import Profile

    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "subscribers" / "example.toml").read_text()

    def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, f in model.model_fields.items():
            inner = f.annotation
            args = getattr(inner, "__args__", ())
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                out += keys(inner, f"[{name}] ")
            elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                out.append(f"[[{name}]]")  # an array of tables
            else:
                out.append(prefix + name)
        return out

    for key in keys(Profile):
        assert f"`{key}`" in readme, key
        assert key.split()[-1] in example, key
