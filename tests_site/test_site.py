"""The rendered course in a real browser with the network blocked: `make test-site`.

Builds the whole site in smoke mode with scripts/build_site.py (the same code as `make
site`), copies it to another folder (a site must work wherever it is copied), and opens every
page in headless Chromium (Debian's ``chromium``, driven by Playwright) with every request
that leaves the site's folder aborted and recorded. On every page it fails if:

* a request left the site's folder (network, or a file outside the site);
* the page logged a console error, or threw;
* raw LaTeX (``$$``, ``\\(``, ``\\[``, ``$...\\x...$``) is left in its text once MathJax ran;
* a solution (a ``solution`` cell, or a ``<details>`` "Solution" block) is visible before a
  click, or shows nothing after one;
* a link or a resource points outside the site or to a file or anchor that is not there;
* its title is empty or is not its heading;
* it weighs more than 2.5 MB (its HTML and the images only it uses; the assets that every
  page shares, MathJax, plotly.js and the theme, are counted once for the site);
* a plotly figure did not draw, or runs past the right edge of the text, or a widget's
  stand-in has no static figure after it.

``PAGKD_TEST_SITE=site make test-site`` checks an existing build (e.g. the demo-mode site of
``make site``) instead of building one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = ("index", *(f"notebooks/{s}" for s in NOTEBOOKS), "notebooks/TEACHING", "docs/method",
         "docs/results", "search", "genindex")
MAX_PAGE_BYTES = 2_500_000
WIDGET_NOTE = "A live widget stands here"



def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is missing: `apt-get install -y chromium` (.ci/run does it)"
    return exe


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("PAGKD_TEST_SITE")
    if given:
        return Path(given).resolve()
    built = tmp_path_factory.mktemp("built") / "site"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--mode",
                          "smoke", "--out", str(built), "--work",
                          str(tmp_path_factory.mktemp("src"))],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    moved = tmp_path_factory.mktemp("copied") / "course"
    shutil.copytree(built, moved)
    shutil.rmtree(built)  # the copy must not lean on the folder it was built in
    return moved


# what the page reports once MathJax and plotly are done
AUDIT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const texts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement.closest(skip)) texts.push(n.textContent);
  }
  const visible = (el) => el.checkVisibility() && el.getClientRects().length > 0;
  const solutions = [];
  for (const cell of document.querySelectorAll(".cell.tag_solution")) {
    const details = cell.querySelector("details");
    const parts = [...cell.querySelectorAll(".cell_input, .cell_output")];
    solutions.push({kind: "cell", folded: !!details && !details.open,
                    visible: parts.filter(visible).length, parts: parts.length});
  }
  for (const details of document.querySelectorAll("details")) {
    const summary = details.querySelector(":scope > summary");
    if (details.closest(".cell.tag_solution") || !summary) continue;
    if (!/^\s*solution/i.test(summary.textContent)) continue;
    const parts = [...details.children].filter((c) => c !== summary);
    solutions.push({kind: "details", folded: !details.open,
                    visible: parts.filter(visible).length, parts: parts.length});
  }
  const urls = [];
  const linking = "a[href], img[src], script[src], link[href], iframe[src], source[src]";
  for (const el of document.querySelectorAll(linking)) {
    urls.push(el.href || el.src);
  }
  const figures = [...document.querySelectorAll(".plotly-graph-div")];
  const article = document.querySelector("article") || document.body;
  const wide = figures.map((f) => (f.querySelector(".main-svg") || f).getBoundingClientRect())
    .filter((r) => r.right > article.getBoundingClientRect().right + 2).map((r) => r.width);
  const widgets = [];
  for (const cell of document.querySelectorAll(".cell")) {
    if (!cell.textContent.includes("%WIDGET%")) continue;
    let next = cell.nextElementSibling;
    while (next && !next.classList.contains("cell")) next = next.nextElementSibling;
    widgets.push(!!next && next.querySelectorAll(".plotly-graph-div .main-svg").length > 0);
  }
  return {
    title: document.title, h1: (document.querySelector("h1") || {textContent: ""}).textContent,
    texts, solutions, urls, widgets, wide,
    figures: figures.length,
    drawn: figures.filter((f) => f.querySelector(".main-svg")).length,
    math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
  };
}
""".replace("%WIDGET%", WIDGET_NOTE)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(),
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


_AUDITS: dict[str, dict] = {}


def audit(site: Path, browser, name: str) -> dict:
    """Open ``name`` (a page of ``site``) with every request outside the site aborted."""
    if name in _AUDITS:
        return _AUDITS[name]
    page_file = site / f"{name}.html"
    assert page_file.is_file(), f"{name}.html is missing from the site"
    root = site.as_uri() + "/"
    context = browser.new_context(offline=True, service_workers="block")
    page = context.new_page()
    left, errors, failed = [], [], []

    def route(r):
        if r.request.url.startswith(root) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(page_file.as_uri(), wait_until="load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')]"
        ".every((f) => f.querySelector('.main-svg'))", timeout=60_000)
    result = page.evaluate(AUDIT_JS)
    # open every folded solution: each must show something
    opened = []
    for summary in page.locator(".cell.tag_solution details > summary").all() + \
            page.locator("details:not(.cell.tag_solution details) > summary").all():
        text = summary.text_content() or ""
        in_cell = summary.evaluate("(s) => !!s.closest('.cell.tag_solution')")
        if not in_cell and not re.match(r"\s*solution", text, re.I):
            continue
        summary.click()
        opened.append(summary.evaluate(
            "(s) => [...s.parentElement.children].filter((c) => c !== s && c.checkVisibility())"
            ".map((c) => c.innerText.trim()).join(' ').length"))
    context.close()
    result.update(left=left, errors=errors, failed=failed, opened=opened, file=page_file)
    _AUDITS[name] = result
    return result


def expected_solutions(name: str) -> int:
    """Solutions in the source notebook: ``solution`` cells and <details> Solution blocks."""
    if not name.startswith("notebooks/0"):
        return 0
    nb = json.loads((ROOT / f"{name}.ipynb").read_text())
    cells = sum("solution" in c["metadata"].get("tags", []) for c in nb["cells"])
    blocks = sum(len(re.findall(r"<details>\s*<summary>\s*Solution", "".join(c["source"])))
                 for c in nb["cells"] if c["cell_type"] == "markdown")
    return cells + blocks


RAW_LATEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$"
                       r"|\$[^$\s][^$\n]*[_^][^$\n]*\$")


@pytest.mark.parametrize("name", PAGES)
def test_no_request_leaves_the_site(site, browser, name):
    a = audit(site, browser, name)
    assert not a["left"], f"{name}: requests outside the site: {a['left'][:5]}"
    assert not a["failed"], f"{name}: requests that failed: {a['failed'][:5]}"


@pytest.mark.parametrize("name", PAGES)
def test_no_console_errors(site, browser, name):
    a = audit(site, browser, name)
    assert not a["errors"], f"{name}: console errors: {a['errors'][:5]}"


@pytest.mark.parametrize("name", PAGES)
def test_no_raw_latex(site, browser, name):
    a = audit(site, browser, name)
    raw = [m.group(0) for t in a["texts"] for m in RAW_LATEX.finditer(t)]
    assert not raw, f"{name}: {len(raw)} raw LaTeX spans, e.g. {raw[:5]}"
    assert a["typeset"] >= a["math"], f"{name}: {a['math']} formulas, {a['typeset']} typeset"


@pytest.mark.parametrize("name", PAGES)
def test_solutions_folded_until_clicked(site, browser, name):
    a = audit(site, browser, name)
    assert len(a["solutions"]) == expected_solutions(name), \
        f"{name}: {len(a['solutions'])} solutions on the page, {expected_solutions(name)} in " \
        "the notebook"
    for s in a["solutions"]:
        assert s["folded"] and s["visible"] == 0, f"{name}: a solution is visible: {s}"
    assert len(a["opened"]) == len(a["solutions"])
    assert all(n > 0 for n in a["opened"]), f"{name}: an opened solution shows nothing"


@pytest.mark.parametrize("name", PAGES)
def test_links_stay_in_the_site(site, browser, name):
    a = audit(site, browser, name)
    root = site.resolve()
    for url in a["urls"]:
        parts = urlsplit(url)
        assert parts.scheme == "file", f"{name}: a link leaves the site: {url}"
        target = Path(unquote(parts.path)).resolve()
        assert target == root or root in target.parents, f"{name}: outside the site: {url}"
        assert target.exists(), f"{name}: a link to a missing file: {url}"
        if parts.fragment and target.suffix == ".html":
            anchor = unquote(parts.fragment)
            html = target.read_text()
            assert f'id="{anchor}"' in html, f"{name}: a link to a missing anchor: {url}"


@pytest.mark.parametrize("name", PAGES)
def test_title_is_the_heading(site, browser, name):
    a = audit(site, browser, name)
    title, h1 = a["title"].strip(), a["h1"].strip().rstrip("#").strip()
    assert title, f"{name}: empty <title>"
    assert not re.search(r"`", title), f"{name}: raw Markdown in the title: {title}"
    if h1:
        assert title.startswith(h1), f"{name}: title {title!r} is not its heading {h1!r}"


@pytest.mark.parametrize("name", PAGES)
def test_page_weight(site, browser, name):
    a = audit(site, browser, name)
    images = {Path(unquote(urlsplit(u).path)) for u in a["urls"] if "/_images/" in u}
    size = a["file"].stat().st_size + sum(p.stat().st_size for p in images if p.is_file())
    assert size <= MAX_PAGE_BYTES, f"{name}: {size / 1e6:.2f} MB"


@pytest.mark.parametrize("name", PAGES)
def test_figures_draw_and_widgets_have_a_static_figure(site, browser, name):
    a = audit(site, browser, name)
    assert a["drawn"] == a["figures"], f"{name}: {a['drawn']} of {a['figures']} figures drew"
    assert all(a["widgets"]), f"{name}: a widget with no static figure after it"
    assert not a["wide"], f"{name}: figures cut off on the right (widths {a['wide']} px)"


def test_every_lesson_draws_a_figure_or_typesets(site, browser):
    """The checks above pass vacuously on an empty page: the lessons must hold content."""
    for stem in NOTEBOOKS[:7]:
        a = audit(site, browser, f"notebooks/{stem}")
        assert a["figures"] + a["typeset"] > 0, f"{stem}: no figure and no formula"
    assert sum(audit(site, browser, f"notebooks/{s}")["figures"] for s in NOTEBOOKS) >= 5


def test_shared_assets_once(site):
    """plotly.js and MathJax each exist once, in _static, and no page inlines plotly.js."""
    assert len(list(site.rglob("plotly*.min.js"))) == 1
    assert (site / "_static" / "mathjax").is_dir()
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"plotly\.js v\d", text), page
        assert not re.search(r"<script[^>]+src=\"https?://", text), page
        assert "require.js" not in text and "requirejs" not in text, page


def test_every_page_is_checked(site):
    found = {str(p.relative_to(site).with_suffix("")) for p in site.rglob("*.html")
             if p.parts[len(site.parts)] != "_static"}  # the theme's template fragments
    assert found == set(PAGES), f"pages not in PAGES: {found - set(PAGES)}; " \
                                f"missing: {set(PAGES) - found}"
