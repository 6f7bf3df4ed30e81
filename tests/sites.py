"""A site on disk for tests and scripts that run the real `digest` command: a digest.toml over
the demo listing, a signing key, and N readers due at midnight UTC."""

from __future__ import annotations

from pathlib import Path

DEMO_LISTING = Path(__file__).resolve().parents[1] / "digest" / "demo_data" / "listing.xml"


def write_site(
    directory: Path,
    smtp_port: int,
    readers: int,
    extra: str = "",
    name: str = "r{i:02d}",
    web: str = "",
) -> list[str]:
    """Write the site; returns the CLI arguments that select its config."""
    (directory / "key").write_text("k" * 40)
    (directory / "digest.toml").write_text(f"""{extra}
[smtp]
host = "127.0.0.1"
port = {smtp_port}
from_address = "digest@papers.example.org"
[web]
secret_key_file = "key"
{web}
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{DEMO_LISTING.as_uri()}"
""")
    subs = directory / "subscribers"
    subs.mkdir(parents=True, exist_ok=True)
    for i in range(readers):
        reader = name.format(i=i)
        (subs / f"{reader}.toml").write_text(
            f'email = "{reader}@example.org"\ntimezone = "UTC"\nsend_at = "00:00"\n'
            '[interests]\nkeywords = ["state space models", "long context"]\n'
        )
    return ["--config", str(directory / "digest.toml")]
