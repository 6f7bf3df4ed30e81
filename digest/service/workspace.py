"""Creating a working directory: `digest init` writes a commented config, an example profile,
a secret key and the database. Existing files are never overwritten unless asked."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from digest import PACKAGE

CONFIG_TEMPLATE = """\
# digest service configuration. Every key is optional; shown here are the defaults
# or an example. Relative paths are relative to this file.

data_dir = "data"                 # the SQLite database and the demo Maildir live here
subscribers_dir = "subscribers"   # one TOML profile per subscriber
# templates_dir = "templates"     # your own copies of the email templates

[database]
# Default: a SQLite file data/digest.db. For several nodes use PostgreSQL:
# url = "postgresql+psycopg://digest@db.example.org/digest"

[smtp]
host = "localhost"
port = 8025
security = "none"                 # "starttls", "tls" (implicit TLS, port 465) or "none"
# username = "digest"
# password_env = "DIGEST_SMTP_PASSWORD"   # or: password_file = "/run/secrets/smtp"
from_address = "digest@localhost"
from_name = "Paper digest"
timeout = 30

[web]
base_url = "http://localhost:8000"   # used to build the links in the email
secret_key_file = "data/secret_key"  # signs unsubscribe and feedback links

[digest]
lookback_days = 3     # a digest draws on the newest listing and the days before it
corpus_days = 90      # days of stored papers the ranker learns its vocabulary from
keep_days = 30        # days a sent digest's message is kept for its web view

[planning]
# workers = 2         # processes planning a large list (default: one per core)
# batch_size = 1000   # subscribers planned together (one set of queries and scores)
# lease_seconds = 300 # several nodes on one database: a dead node's batch is taken over after this

# Sources. kind is arxiv-rss, arxiv-api, hf-daily or rss; url is https://... or file://...
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "https://rss.arxiv.org/rss/cs.LG+cs.CL"
categories = ["cs.LG", "cs.CL"]   # papers kept; also what `digest ingest --backfill DAYS` fetches
include_cross_lists = true
include_replacements = false

[[sources]]
name = "arxiv-api"
kind = "arxiv-api"   # looks up the example papers named in profiles; also used by --backfill
url = "https://export.arxiv.org/api/query"

[[sources]]
name = "hf"
kind = "hf-daily"    # adds Hugging Face upvotes to arXiv papers
url = "https://huggingface.co/api/daily_papers"
"""


def packaged_example_profile() -> Path:
    """subscribers/example.toml from the wheel, or from the repository in a source checkout."""
    here = PACKAGE
    for candidate in (
        here / "demo_data" / "example.toml",
        here.parent / "subscribers" / "example.toml",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("example.toml is missing from this installation")


def write_secret_key(path: Path) -> bool:
    """A random key readable only by its owner; False if one exists already."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
    return True


def init_workspace(directory: Path, force: bool = False) -> list[str]:
    """Write the starting files into ``directory``; returns what was done, one line each."""
    done: list[str] = []
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "digest.toml"
    if force or not config.exists():
        config.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        done.append(f"wrote {config}")
    else:
        done.append(f"kept {config} (exists; --force overwrites)")
    profile = directory / "subscribers" / "example.toml"
    if force or not profile.exists():
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(packaged_example_profile().read_text(encoding="utf-8"), encoding="utf-8")
        done.append(f"wrote {profile}")
    else:
        done.append(f"kept {profile} (exists)")
    key = directory / "data" / "secret_key"
    done.append(f"wrote {key}" if write_secret_key(key) else f"kept {key} (exists)")
    return done
