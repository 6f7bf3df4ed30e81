"""Dependency floors keep out releases with known vulnerabilities, and constraints.txt (what CI
installs) satisfies every floor, so a reproducible run is also a safe one."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT

# Releases known to be vulnerable, each kept out by a floor (CVE in the pyproject comment).
VULNERABLE = {
    "starlette": "0.47.1",
    "jinja2": "3.1.5",
    "aiosmtpd": "1.4.5",
    "h11": "0.15.0",
    "scikit-learn": "1.4.2",
}


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return {r.name.lower(): r for r in reqs}


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.strip().lower().replace("_", "-")] = Version(version.strip())
    return out


def test_no_floor_admits_a_release_with_a_known_vulnerability() -> None:
    reqs = requirements()
    for name, bad in VULNERABLE.items():
        assert name in reqs, f"{name} must be a direct dependency to carry a floor"
        assert not reqs[name].specifier.contains(bad), (name, str(reqs[name].specifier))


def test_constraints_pin_every_requirement_within_its_floor() -> None:
    pinned = pins()
    for name, req in requirements().items():
        assert name in pinned, f"constraints.txt has no pin for {name}"
        assert req.specifier.contains(pinned[name]), (name, str(pinned[name]), str(req.specifier))
