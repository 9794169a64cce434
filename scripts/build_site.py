"""Render the course as a static site: ``make site`` (notebooks/README.md, "The rendered course").

Two steps:

1. **Execute.** Each notebook runs (nbclient) in a fresh kernel from ``notebooks/`` in its
   mode (below), with plotly's ``plotly_mimetype`` renderer. Its outputs are then made fit
   for a page without a kernel: each plotly figure becomes a ``<div>`` drawn by the site's
   one shared copy of plotly.js; a live widget's output is replaced by a line that points to
   its static figure (``pagkd_lite.course.static``, the next cell); a solution cell (tag
   ``solution``) gets myst-nb's ``hide-cell`` tag, so its code AND its output stay folded
   until the reader opens them.
2. **Render.** Sphinx with myst-nb and the book theme (``scripts/course_site/conf.py``) turns the
   executed notebooks, ``docs/method.md`` (with its diagrams) and ``notebooks/TEACHING.md``
   into ``site/``: sidebar, previous/next links, search, MathJax from the
   ``sphinx-mathjax-offline`` package. The site needs no network: copy the folder anywhere.

Modes: ``demo`` runs the ``demo`` preset, loading the models that ``make cache`` trained
(class mode); notebook 07 (``SMOKE_ONLY``) trains a model per fold (cross-validation) and
runs in smoke mode. ``smoke`` runs everything in smoke mode (minutes; numbers mean nothing),
which is what ``make test-site`` builds. Every page says which mode it was run in.

    python scripts/build_site.py [--mode demo|smoke] [--only 00 05] [--out site]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SITE_CONF = Path(__file__).resolve().parent / "course_site"
# the pages besides the notebooks, at their repository paths; the files they link to or show
# (diagrams, figures) come along; a link to another Markdown file is shown as its name
EXTRA_PAGES = ("docs/method.md", "docs/results.md", "notebooks/TEACHING.md")
LINK = re.compile(r"\]\(([^)\s#]+)|src=\"([^\"#]+)\"")
# 07: cross-validation trains a model per fold (five teachers and five students in demo mode)
SMOKE_ONLY = ("07",)
TIMEOUT_S = 1800
# A cell that shows a live widget can leave nbclient (0.11) waiting for a reply that has
# already come, until the cell's timeout runs out (jupyter/nbclient issue 312: intermittent,
# seen with notebook 01's group widget, which then "hung" for the 30-minute timeout). Such
# cells finish in seconds, so they get a short timeout: a lost wait costs 90 s, not 30 min.
WIDGET_TIMEOUT_S = 90
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("*A live widget stands here when the notebook runs in JupyterLab (it needs a "
               "kernel). On this page, use the static figure that follows it.*")


def cell_timeout(cell) -> int:
    """Seconds nbclient may wait for ``cell``: short for live-widget cells (see above)."""
    return WIDGET_TIMEOUT_S if "widgets." in cell.source or "explorer(" in cell.source \
        else TIMEOUT_S


def run_notebook(path: Path, smoke: bool) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in ``notebooks/`` with the mode's environment; (notebook, seconds)."""
    nb = nbformat.read(path, as_version=4)
    env = {"PAGKD_SMOKE": "1" if smoke else "0", "PLOTLY_RENDERER": "plotly_mimetype",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=TIMEOUT_S, timeout_func=cell_timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        return nb, time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plotly_div(figure: dict) -> str:
    """A plotly figure as a ``<div>`` and the script that draws it with the page's plotly.js."""
    import plotly.io as pio

    # the page's column sets the width (a width fixed for JupyterLab runs past it); the
    # height stays, and image panels keep their aspect
    figure.get("layout", {}).pop("width", None)
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, validate=False,
                       config={"responsive": True, "displaylogo": False})


def for_the_page(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Outputs a static page can show (see the module's docstring); ``nb`` is changed."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "solution" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
            cell.metadata["mystnb"] = {"code_prompt_show": "Show the solution",
                                       "code_prompt_hide": "Hide the solution"}
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                out = nbformat.v4.new_output("display_data", data={"text/markdown": WIDGET_NOTE})
            elif PLOTLY_MIME in data:
                out = nbformat.v4.new_output("display_data",
                                             data={"text/html": plotly_div(data[PLOTLY_MIME])})
            outputs.append(out)
        cell.outputs = outputs
    return nb


def mode_note(smoke: bool, seconds: float) -> nbformat.NotebookNode:
    what = ("**smoke mode**: a tiny model on tiny data, trained for seconds; the numbers and "
            "pictures show the mechanics only" if smoke else
            "**demo mode** (the `demo` preset), models loaded from the class-mode cache "
            "(`make cache`) or trained")
    return nbformat.v4.new_markdown_cell(
        f"> Rendered by `make site` on {time.strftime('%Y-%m-%d')}: executed in {what}; "
        f"{seconds:.0f} s to run. Figures are interactive plotly (zoom, hover); each widget "
        "has a static figure beside it. Run the notebook for the real thing.")


def assemble(src: Path, lessons: list[str], mode: str) -> None:
    """The Sphinx project in ``src``: configuration, index, extra pages, plotly.js."""
    import plotly

    shutil.copy(SITE_CONF / "conf.py", src / "conf.py")
    mode_line = ("The lessons were executed in smoke mode: tiny models, numbers that mean "
                 "nothing." if mode == "smoke" else
                 "The lessons were executed in demo mode, with the models of `make cache` "
                 "(notebook 07 in smoke mode: it trains a model per fold).")
    index = (SITE_CONF / "index.md").read_text()
    index = index.replace("{{ mode_line }}", mode_line)
    index = index.replace("{{ lessons }}", "\n".join(f"notebooks/{stem}" for stem in lessons))
    (src / "index.md").write_text(index)
    for page in EXTRA_PAGES:
        copy_in(src, ROOT / page)
    for page in [*EXTRA_PAGES, *(f"notebooks/{stem}.ipynb" for stem in lessons)]:
        for target in linked_files(ROOT / page):
            copy_in(src, target)
    (src / "_static").mkdir(exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                src / "_static" / "plotly.min.js")


def copy_in(src: Path, path: Path) -> None:
    """``path`` (in the repository) to the same place under ``src``."""
    dest = src / path.relative_to(ROOT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest)


def linked_files(page: Path) -> list[Path]:
    """The repository files that ``page`` links to or shows, other than Markdown pages and
    notebooks (those are pages of the site or shown as names)."""
    text = page.read_text()
    found = []
    for groups in LINK.findall(text):
        name = next(g for g in groups if g)
        if "://" in name or name.endswith((".md", ".ipynb")):
            continue
        path = (page.parent / name).resolve()
        if path.is_file() and ROOT in path.parents:
            found.append(path)
    return found


def render(src: Path, out: Path) -> None:
    """Sphinx: ``src`` -> ``out`` (a fresh build; warnings are printed, not fatal)."""
    from sphinx.cmd.build import build_main

    # built inside src (myst-nb writes a jupyter_execute/ folder beside the output), then moved
    html = src / "_build" / "html"
    code = build_main(["-b", "html", "-E", "-q", "-d", str(src / "_build" / "doctrees"),
                       str(src), str(html)])
    if code:
        raise SystemExit(f"sphinx-build failed ({code})")
    (html / ".buildinfo").unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(html), str(out))


def build(out: Path, mode: str, only: list[str] | None = None,
          work: Path | None = None) -> list[dict]:
    """Execute the notebooks and render the site into ``out``; return one record per page."""
    src = work or ROOT / "build" / "site-src"
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    pages = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        number = path.name[:2]
        if only and number not in only:
            continue
        smoke = mode == "smoke" or number in SMOKE_ONLY
        nb, seconds = run_notebook(path, smoke)
        nb = for_the_page(nb)
        nb.cells.insert(1, mode_note(smoke, seconds))
        nbformat.write(nb, src / "notebooks" / path.name)
        pages.append({"stem": path.stem, "seconds": seconds, "mode": "smoke" if smoke else "demo"})
        print(f"{path.name}: {seconds:.0f} s ({pages[-1]['mode']})", flush=True)
    assemble(src, [p["stem"] for p in pages], mode)
    t0 = time.perf_counter()
    render(src, out)
    print(f"sphinx: {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return pages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("demo", "smoke"), default="demo")
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers, e.g. 00 05")
    p.add_argument("--out", default=str(ROOT / "site"))
    p.add_argument("--work", default=None, help="the Sphinx source folder it assembles "
                                                "(default build/site-src)")
    args = p.parse_args()
    t0 = time.perf_counter()
    pages = build(Path(args.out), args.mode, args.only, Path(args.work) if args.work else None)
    print(f"{len(pages)} notebooks in {args.out}, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
