"""Render the course to static HTML: ``make site`` (see notebooks/README.md, "The rendered course").

Each notebook is executed (nbclient) in a fresh kernel from ``notebooks/`` and exported
with nbconvert's ``lab`` template (require.js from a CDN removed, ``site_template/``):

* plotly figures use plotly's ``notebook`` renderer, which puts plotly.js itself into the
  page once (no CDN), so every figure draws with no kernel and no network;
* widgets have static fallbacks in the notebooks (``pagkd_lite.static``);
* images (the SVG diagrams) are embedded, so each page is one self-contained file.

Modes: ``demo`` runs the ``demo`` preset, loading the models that ``make cache`` trained
(class mode); notebook 07 (``SMOKE_ONLY``) trains a model per fold (cross-validation) and
runs in smoke mode. ``smoke`` runs everything in smoke mode (seconds; numbers mean nothing). Every
page starts with a line that says which mode it was run in.

    python scripts/build_site.py [--mode demo|smoke] [--only 00 05] [--out site]
"""

from __future__ import annotations

import argparse
import html
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# 07: cross-validation trains a model per fold (five teachers and five students in demo mode)
SMOKE_ONLY = ("07",)
TIMEOUT_S = 1800
# A cell that shows a live widget can leave nbclient (0.11) waiting for a reply that has
# already come, until the cell's timeout runs out (jupyter/nbclient issue 312: intermittent,
# seen with notebook 01's group widget, which then "hung" for the 30-minute timeout). Such
# cells finish in seconds, so they get a short timeout: a lost wait costs 90 s, not 30 min.
WIDGET_TIMEOUT_S = 90


def cell_timeout(cell) -> int:
    """Seconds nbclient may wait for ``cell``: short for live-widget cells (see above)."""
    return WIDGET_TIMEOUT_S if "widgets." in cell.source else TIMEOUT_S


def run_notebook(path: Path, smoke: bool) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in ``notebooks/`` with the mode's environment; (notebook, seconds)."""
    nb = nbformat.read(path, as_version=4)
    env = {"PAGKD_SMOKE": "1" if smoke else "0", "PLOTLY_RENDERER": "notebook",
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


def mode_note(smoke: bool, seconds: float) -> nbformat.NotebookNode:
    what = ("**smoke mode**: a tiny model on tiny data, trained for seconds; the numbers and "
            "pictures show the mechanics only" if smoke else
            "**demo mode** (the `demo` preset), models loaded from the class-mode cache "
            "(`make cache`) or trained")
    return nbformat.v4.new_markdown_cell(
        f"> Rendered by `make site` on {time.strftime('%Y-%m-%d')}: executed in {what}; "
        f"{seconds:.0f} s to run. Figures are interactive plotly (zoom, hover); widgets are "
        "replaced by their static versions below them. Run the notebook for the real thing.")


def build(out: Path, mode: str, only: list[str] | None = None) -> list[dict]:
    """Execute and export the notebooks into ``out``; return one record per page."""
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True,
                            extra_template_basedirs=[str(Path(__file__).parent / "site_template")])
    exporter.template_file = "index.html.j2"
    pages = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        number = path.name[:2]
        if only and number not in only:
            continue
        smoke = mode == "smoke" or number in SMOKE_ONLY
        nb, seconds = run_notebook(path, smoke)
        nb.cells.insert(0, mode_note(smoke, seconds))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(NOTEBOOKS)}})
        target = out / f"{path.stem}.html"
        target.write_text(body)
        title = nb.cells[1].source.splitlines()[0].lstrip("# ")
        pages.append({"file": target.name, "title": title, "seconds": seconds,
                      "mode": "smoke" if smoke else "demo"})
        print(f"{path.name}: {seconds:.0f} s ({pages[-1]['mode']}) -> {target}", flush=True)
    write_index(out, pages)
    return pages


def write_index(out: Path, pages: list[dict]) -> Path:
    rows = "\n".join(f'<li><a href="{p["file"]}">{html.escape(p["title"])}</a> '
                     f'<small>({p["mode"]} mode, {p["seconds"]:.0f} s)</small></li>'
                     for p in pages)
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pagkd_lite: the course</title>"
        "<style>body{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.5}"
        "</style></head><body><h1>pagkd_lite: the course, rendered</h1>"
        "<p>Pairing-free group-level knowledge distillation (PaGKD), NBI teacher to WLI "
        "student, rebuilt step by step. Each page is an executed notebook: every figure "
        "draws in the browser with no kernel and no network. To run the notebooks "
        "yourself: <code>make lab</code>.</p>"
        f"<ol>{rows}</ol></body></html>\n")
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("demo", "smoke"), default="demo")
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers, e.g. 00 05")
    p.add_argument("--out", default=str(ROOT / "site"))
    args = p.parse_args()
    t0 = time.perf_counter()
    pages = build(Path(args.out), args.mode, args.only)
    print(f"{len(pages)} pages in {args.out}, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
