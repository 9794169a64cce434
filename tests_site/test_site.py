"""The rendered course in a real browser: `make test-site` (needs Debian's `chromium`).

Builds two pages in smoke mode with scripts/build_site.py (the same code as `make site`),
opens each in headless Chromium with no network, and checks that plotly drew a figure:
the DOM must hold plotly's drawn SVG (``main-svg``), which exists only after plotly.js
ran in the page.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("00", "01")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is missing: `apt-get install -y chromium` (.ci/run does it)"
    return exe


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--mode",
                          "smoke", "--only", *PAGES, "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _dom(page: Path) -> str:
    res = subprocess.run([_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--proxy-server=127.0.0.1:9",
                          "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize("number", PAGES)
def test_page_draws_a_plotly_figure_offline(site, number):
    page = next(site.glob(f"{number}_*.html"))
    raw = page.read_text()
    assert not re.search(r"<script[^>]+src=\"https?://[^\"]*plotly", raw), "plotly.js from a CDN"
    dom = _dom(page)
    assert dom.count('class="main-svg"') >= 1, f"{page.name}: no plotly figure was drawn"


def test_index_links_every_page(site):
    index = (site / "index.html").read_text()
    for number in PAGES:
        assert f'href="{next(site.glob(f"{number}_*.html")).name}"' in index
