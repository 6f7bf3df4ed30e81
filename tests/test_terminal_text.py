"""Text from feeds and profiles reaches the terminal literally: `[/x]` or `[link=…]` in a title
is shown as written, never parsed as rich markup (which crashed commands or made a hyperlink)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import digest, write_profile

TITLE = "State space models [/x] and [link=https://evil.example]click[/link] [bold]now"


def feed(title: str) -> str:
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>lab [/x]</title>'
        "<link>https://lab.example.org/</link><description>d</description>"
        f"<item><title>{title}</title><link>https://lab.example.org/p/[/x]</link>"
        "<description>Long context state space models [red]x[/red].</description></item>"
        "</channel></rss>"
    )


def test_markup_in_feed_and_profile_text_is_printed_literally_by_every_command(
    site: Path,
) -> None:
    (site / "lab.xml").write_text(feed(TITLE))
    with (site / "digest.toml").open("a") as f:
        f.write(f'[[sources]]\nname = "lab"\nkind = "rss"\nurl = "{(site / "lab.xml").as_uri()}"\n')
    write_profile(
        site / "subscribers",
        "cy",
        'email = "cy@example.org"\nname = "Cy [/x]"\n'
        '[interests]\nkeywords = ["state space models [/x]", "long context"]\n'
        'categories = ["cs.XX"]\n',
    )
    outputs = []
    for command in (
        ["ingest"],
        ["subscribers", "check"],
        ["subscribers", "list"],
        ["preview", "cy@example.org"],
        ["run"],
        ["feedback", "cy@example.org", "https://lab.example.org/p/[/x]", "like"],
        ["feedback", "cy@example.org"],
        ["status"],
        ["deliveries"],
    ):
        ran = digest(*command, cwd=site)
        assert "Traceback" not in ran.stderr and "MarkupError" not in ran.stderr, command
        assert ran.returncode in (0, 2), (command, ran.returncode, ran.stderr)
        assert "\x1b]8;" not in ran.stdout + ran.stderr  # no terminal hyperlink
        outputs.append(ran.stdout + ran.stderr)
    everything = "\n".join(outputs)
    assert "[link=https://evil.example]click[/link]" in everything  # as written
    assert "Cy [/x]" in everything


def test_run_shows_a_bar_per_stage_on_a_terminal_and_none_to_cron(site: Path) -> None:
    import os
    import pty
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    env.update(COLUMNS="120", TERM="xterm")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "run", "--dry-run"],
        cwd=site,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
    for stage in ("ingest", "preparing", "planning"):
        assert stage in screen
    assert "2/2" in screen  # the two readers planned, as a count beside the bar
    # Without a terminal (cron, a pipe) no bar: only the summary.
    piped = digest("run", "--dry-run", cwd=site)
    assert piped.returncode == 0 and "preparing" not in piped.stdout and "1/1" not in piped.stdout
