"""A real digest in headless Chromium at phone and desktop widths (Debian's `chromium`).

`make check` installs Chromium when it is missing (see the Makefile's `browser` target). The
screenshots are kept in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import pytest

from digest.config import Config
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import NOW, ROOT, SmtpServer

ARTIFACTS = ROOT / "tests" / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Headless Chromium will not make a window narrower than 500 px, so the digest is shown in an
# iframe of the wanted width. The script lives in the test page around it (mail clients run no
# scripts): it measures what a reader sees and writes it into the DOM, which --dump-dom prints.
HARNESS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="mail" width="{width}" height="{height}" style="border:0;display:block"
 srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById("mail").addEventListener("load", (event) => {{
  const win = event.target.contentWindow, doc = event.target.contentDocument;
  const titles = [...doc.querySelectorAll("h2")].map((h) => {{
    const r = h.getBoundingClientRect(), style = win.getComputedStyle(h);
    return {{text: h.textContent.trim(), left: r.left, right: r.right, height: r.height,
             visible: style.visibility !== "hidden" && style.display !== "none"}};
  }});
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({{width: win.innerWidth,
    scrollWidth: doc.documentElement.scrollWidth, titles}});
  document.body.appendChild(out);
}});
</script>
</body></html>
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run `make browser` (make check does)")
    return found


def browse(html_file: Path, width: int, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="digest-chromium-") as profile:
        return subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={max(width, 500)},2400",
                *extra,
                html_file.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def delivered_html(workspace: Config, store: Store, smtp_server: SmtpServer) -> str:
    run(workspace, store, now=NOW)
    data = next(m.data for m in smtp_server.received if m.rcpt_tos == ["ada@example.org"])
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = msg.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    assert part is not None
    return str(part.get_content())


def measure(html: str, width: int, tmp_path: Path, screenshot: str) -> dict[str, Any]:
    """Render the digest at this width: keep a screenshot, return what the probe measured."""
    page = tmp_path / f"framed-{width}.html"
    framed = HARNESS.format(width=width, height=4000, srcdoc=escape(html, quote=True))
    page.write_text(framed, encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    taken = browse(page, width, f"--screenshot={shot}")
    assert shot.exists(), taken.stderr[-2000:]
    dumped = browse(page, width, "--dump-dom", "--virtual-time-budget=5000")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, dumped.stderr[-2000:]
    result: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return result


@pytest.mark.parametrize("width", [375, 1024])
def test_a_real_digest_fits_the_screen_and_shows_every_title(
    workspace: Config, store: Store, smtp_server: SmtpServer, tmp_path: Path, width: int
) -> None:
    html = delivered_html(workspace, store, smtp_server)
    result = measure(html, width, tmp_path, f"digest-{width}px.png")
    assert result["width"] == width
    assert result["scrollWidth"] <= width, "horizontal overflow"
    titles = result["titles"]
    assert len(titles) == len(re.findall(r"<h2", html)) and titles
    for t in titles:
        assert t["visible"] and t["height"] > 0, t
        assert t["left"] >= 0 and t["right"] <= width, t
