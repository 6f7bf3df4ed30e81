"""Lab lists: a profile with `recipients = [...]` sends one ranked digest to each address, each
with its own unsubscribe link and delivery row; feedback from any recipient trains the list's
one model. Through the real CLI, a real SMTP server and the real web app over HTTP."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import Config, SourceConfig
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import DATA, NOW, SmtpServer, digest_here, lines_by_file, write_profile
from tests.test_web import WebServer, delivered, text_links

LAB = ["ada@lab.example.org", "Bea@lab.example.org", "cy@lab.example.org"]
PROFILE = f"""\
name = "Vision lab"
recipients = {LAB!r}
timezone = "Europe/London"
max_papers = 8
[interests]
keywords = ["state space models", "long context"]
papers = ["2609.04411", "2610.02290"]
""".replace("'", '"')


def lab_site(root: Path) -> None:
    for old in (root / "subscribers").glob("*.toml"):
        old.unlink()
    write_profile(root / "subscribers", "lab", PROFILE)


def raw_header(data: bytes, name: str) -> str:
    m = re.search(rb"^" + name.encode() + rb": (.*(?:\r\n[ \t].*)*)", data, re.M)
    assert m is not None, name
    return m.group(1).decode().rstrip("\r")


def test_a_lab_list_of_three_gets_three_messages_each_with_its_own_unsubscribe(
    site: Path, smtp_server: SmtpServer
) -> None:
    lab_site(site)
    done = digest_here("run", cwd=site)
    assert done.returncode == 0, done.stdout
    got = {m.rcpt_tos[0]: m.data for m in smtp_server.received}
    assert sorted(got) == sorted(a.lower() for a in LAB)  # sent as the delivery rows hold them
    unsubscribes = set()
    for address, data in got.items():
        # Each sees only their own address (under the list's name).
        assert raw_header(data, "To").lower() == f"vision lab <{address}>"
        for other in LAB:
            if other.lower() != address:
                assert other.encode() not in data
        unsubscribes.add(raw_header(data, "List-Unsubscribe"))
        assert b"Hello Vision lab" in data
    assert len(unsubscribes) == 3
    # One ranked digest: the same papers, in the same order, in three delivery rows.
    listed = digest_here("deliveries", cwd=site)
    rows = [line for line in listed.stdout.splitlines() if "lab.example.org" in line]
    assert len(rows) == 3, listed.stdout
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        picks = [d.paper_ids for d in store.deliveries()]
        assert len(picks) == 3 and picks[0] and picks[0] == picks[1] == picks[2]
    finally:
        store.dispose()
    # The list shows as three readers, with the file they come from.
    shown = digest_here("subscribers", "list", "--format", "csv", cwd=site)
    assert sum("lab.toml" in line for line in shown.stdout.splitlines()) == 3, shown.stdout


@pytest.fixture
def lab(workspace: Config, store: Store) -> Iterator[WebServer]:
    lab_site(workspace.subscribers_dir.parent)
    server = WebServer(workspace, store)
    yield server
    server.close()


def test_one_recipient_leaving_stops_only_theirs_and_any_recipients_feedback_trains_the_list(
    workspace: Config, store: Store, smtp_server: SmtpServer, lab: WebServer
) -> None:
    run(workspace, store, now=NOW)
    assert len(smtp_server.received) == 3
    key = LAB[0].lower() + ":list"
    before = store.rank_models([key])[key].fingerprint
    # Bea unsubscribes with one click, from the header of her own message.
    bea = delivered(smtp_server, LAB[1].lower())
    url = lab.local(str(bea["List-Unsubscribe"]).strip("<>"))
    lab.client.post(url, content=b"List-Unsubscribe=One-Click")
    assert store.is_unsubscribed(LAB[1].lower())
    assert not store.is_unsubscribed(LAB[0].lower())
    # Cy says "less like this" about the first paper, from his own message.
    cy = delivered(smtp_server, LAB[2].lower())
    [less, *_] = text_links(cy, "Less like this")
    answer = lab.client.post(lab.local(less))
    assert answer.status_code == 200
    smtp_server.received.clear()
    later = workspace.model_copy(
        update={
            "sources": [
                *workspace.sources,
                SourceConfig(name="next", kind="arxiv-rss", url=(DATA / "next_day.xml").as_uri()),
            ]
        }
    )
    nxt = run(later, store, now=NOW + timedelta(days=1))
    by = {r.email.lower(): r.status for r in nxt.results}
    assert by[LAB[1].lower()] == "unsubscribed"
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [LAB[0], LAB[2]]  # lower case
    # One model for the list, under its first address, retrained with Cy's verdict.
    models = store.rank_models()
    assert list(models) == [key]  # not the first recipient's own model: that is theirs alone
    assert models[key].fingerprint != before


def test_mistakes_in_a_lab_list_are_one_line_naming_the_file_and_the_key(site: Path) -> None:
    subs = site / "subscribers"
    lab_site(site)
    write_profile(subs, "both", 'email = "x@example.org"\nrecipients = ["y@example.org"]\n')
    write_profile(subs, "none", 'name = "Nobody"\n')
    write_profile(subs, "twice", 'recipients = ["z@example.org", "Z@example.org"]\n')
    write_profile(subs, "bad", 'recipients = ["ok@example.org", "not an address"]\n')
    write_profile(subs, "zz-clash", 'recipients = ["q@example.org", "cy@lab.example.org"]\n')
    checked = digest_here("subscribers", "check", cwd=site)
    assert checked.returncode == 1
    said = lines_by_file(checked)
    assert "recipients: give `email` or `recipients`, not both" in said["both.toml"]
    assert "email: required key is missing" in said["none.toml"]
    assert "recipients: [1] 'Z@example.org' is in the list twice" in said["twice.toml"]
    assert "recipients: [1] 'not an address': must be a plain address" in said["bad.toml"]
    assert "recipients[1]: the same address as" in said["zz-clash.toml"]
    assert "lab.toml" not in said  # the list itself is fine


def test_a_lab_list_message_leaves_with_one_recipient_in_the_envelope_and_headers(
    site: Path, smtp_server: SmtpServer
) -> None:
    lab_site(site)
    digest_here("run", cwd=site)
    for m in smtp_server.received:
        assert len(m.rcpt_tos) == 1
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        assert msg["Cc"] is None and msg["Bcc"] is None
        assert str(msg["To"]).lower() == f"vision lab <{m.rcpt_tos[0]}>"


def test_a_new_list_naming_a_readers_address_takes_nothing_from_them(
    site: Path, smtp_server: SmtpServer
) -> None:
    # Ada has her own profile; a lab list added later names her too (and sorts first).
    checked = digest_here("subscribers", "check", cwd=site)  # the cache now knows ada.toml
    assert checked.returncode == 0
    subs = site / "subscribers"
    write_profile(subs, "aaa-lab", 'recipients = ["new@lab.example.org", "ada@example.org"]\n')
    for _ in range(2):  # and again from the cache: the refusal is said every time
        again = digest_here("subscribers", "check", cwd=site)
        lines = [x for x in (again.stdout + again.stderr).splitlines() if "same address" in x]
        assert len(lines) == 1 and "aaa-lab.toml: recipients[1]: the same address as" in lines[0]
    listed = digest_here("subscribers", "list", "--format", "csv", cwd=site)
    rows = {line.split(",")[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "ada.toml" in rows["ada@example.org"]  # still her own profile
    assert "aaa-lab.toml" in rows["new@lab.example.org"]  # the rest of the list is served


def test_a_reader_keeps_their_address_after_editing_their_file_or_losing_the_cache(
    site: Path, smtp_server: SmtpServer
) -> None:
    import shutil

    subs = site / "subscribers"
    assert digest_here("run", cwd=site).returncode == 0  # bob.toml has had bob@ all along
    write_profile(subs, "a-lab", 'recipients = ["dan@lab2.example.org", "bob@example.org"]\n')
    write_profile(subs, "a-bob", 'email = "bob@example.org"\nname = "Impostor"\n')

    def holders() -> dict[str, str]:
        listed = digest_here("subscribers", "list", "--format", "csv", cwd=site)
        rows = [line.split(",") for line in listed.stdout.splitlines()[1:]]
        return {r[0]: next(Path(x).name for x in r if x.endswith(".toml")) for r in rows}

    def refused() -> set[str]:
        out = digest_here("subscribers", "check", cwd=site)
        return {
            Path(x.split(": ")[0]).name
            for x in (out.stdout + out.stderr).splitlines()
            if "the same address as" in x
        }

    assert holders()["bob@example.org"] == "bob.toml"
    assert refused() == {"a-lab.toml", "a-bob.toml"}
    # Bob edits his own file: still his.
    (subs / "bob.toml").write_text((subs / "bob.toml").read_text().replace("Bob", "Robert"))
    assert holders()["bob@example.org"] == "bob.toml"
    assert refused() == {"a-lab.toml", "a-bob.toml"}
    # The cache is gone (a new node, or data/models removed): a reader's own profile still
    # wins over a list; of two own profiles, the first by name (a-bob.toml) then keeps it.
    shutil.rmtree(site / "data" / "models")
    (subs / "a-bob.toml").unlink()
    assert holders()["bob@example.org"] == "bob.toml"
    assert holders()["dan@lab2.example.org"] == "a-lab.toml"
    assert refused() == {"a-lab.toml"}


def test_an_empty_list_says_so(site: Path) -> None:
    write_profile(site / "subscribers", "empty", "recipients = []\n")
    checked = digest_here("subscribers", "check", cwd=site)
    line = next(x for x in checked.stderr.splitlines() if "empty.toml" in x)
    assert "recipients: an empty list: name at least one address, or give `email`" in line
