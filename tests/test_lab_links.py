"""Every Markdown link and image of the course resolves in JupyterLab as `make lab` serves it.

JupyterLab resolves a relative URL in a Markdown cell against the notebook's folder, inside
the folder the server serves (its root): ``../docs/gkd_pro.svg`` in ``03_gkd_pro.ipynb``
is requested as ``/files/<folder>/../docs/gkd_pro.svg``, normalised, and a path above the
root is clamped at the root. With the root at ``notebooks/`` that is ``/files/docs/...``, a
404 (issue 35); ``make lab`` serves the repository's root. The served root and the page it
opens are read from ``make -n lab``, so this test follows the Makefile. The browser test
(``make test-lab``) checks the same in a real JupyterLab, from its server's log.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")


def lab_command() -> list[str]:
    """The ``jupyter lab`` command of ``make lab``, its variables expanded."""
    out = subprocess.run(["make", "-n", "--no-print-directory", "lab"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    lines = out.replace("\\\n", " ").splitlines()
    cmd = [shlex.split(line) for line in lines if re.search(r"jupyter(-lab)? lab\b", line)]
    assert cmd, f"make lab runs no `jupyter lab`:\n{out}"
    return cmd[-1]


def served(cmd: list[str]) -> tuple[Path, str | None]:
    """(the folder the server serves, the page it opens relative to it, if any)."""
    root, opened = None, None
    for arg in cmd[2:]:
        m = re.match(r"--(?:ServerApp|NotebookApp)\.(?:root|notebook)_dir=(.+)", arg)
        if m:
            root = Path(m.group(1))
        elif not arg.startswith("-"):
            opened = arg
    positional = (ROOT / opened) if opened else None
    if positional is not None and positional.is_dir():  # `jupyter lab DIR` serves DIR
        return (root or positional).resolve(), None
    root = (ROOT / root).resolve() if root else ROOT
    if positional is not None:
        return root, posixpath.relpath(positional.resolve().as_posix(), root.as_posix())
    return root, None


def lab_path(page: str, target: str) -> str | None:
    """The server path JupyterLab requests for ``target`` linked from ``page`` (both relative
    to the served root); None for a URL it does not serve (a scheme, an anchor)."""
    target = unquote(target.split("#")[0].split("?")[0])
    if not target or re.match(r"[a-zA-Z][\w+.-]*:", target) or target.startswith("//"):
        return None
    return posixpath.normpath(posixpath.join("/", posixpath.dirname(page), target)).lstrip("/")


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def course_pages(root: Path) -> list[Path]:
    """The notebooks, the Markdown pages beside them, and the Markdown pages they link to."""
    pages = sorted((ROOT / "notebooks").glob("*.ipynb")) + \
        sorted((ROOT / "notebooks").glob("*.md"))
    for page in list(pages):
        rel = page.relative_to(root).as_posix()
        for m in LINK.finditer(markdown_of(page)):
            target = lab_path(rel, m.group(1) or m.group(2))
            if target and target.endswith(".md") and (root / target).is_file() \
                    and root / target not in pages:
                pages.append(root / target)
    return pages


def missing(root: Path, pages: list[Path]) -> dict[str, list[str]]:
    bad = {}
    for page in pages:
        rel = page.relative_to(root).as_posix()
        for m in LINK.finditer(markdown_of(page)):
            link = m.group(1) or m.group(2)
            target = lab_path(rel, link)
            if target is not None and not (root / target).exists():
                bad.setdefault(rel, []).append(f"{link} -> /files/{target}")
    return bad


def test_lab_path_is_what_jupyterlab_requests():
    assert lab_path("notebooks/03_gkd_pro.ipynb", "../docs/gkd_pro.svg") == "docs/gkd_pro.svg"
    # above the root: clamped, as in the issue (root notebooks/: GET /api/contents/docs/...)
    assert lab_path("03_gkd_pro.ipynb", "../docs/method.md") == "docs/method.md"
    assert lab_path("notebooks/README.md", "TEACHING.md#minutes") == "notebooks/TEACHING.md"
    assert lab_path("notebooks/x.ipynb", "/docs/a%20b.svg") == "docs/a b.svg"
    for external in ("https://example.org/x.svg", "#goals", "attachment:x.png", "mailto:a@b"):
        assert lab_path("notebooks/x.ipynb", external) is None


def test_the_checker_catches_the_issue():
    """Served from notebooks/ (the old `make lab`), the diagrams of 03 and 04 are missing."""
    root = ROOT / "notebooks"
    bad = missing(root, [root / "03_gkd_pro.ipynb", root / "04_gkd_den.ipynb"])
    assert "../docs/gkd_pro.svg -> /files/docs/gkd_pro.svg" in bad["03_gkd_pro.ipynb"]
    assert "../docs/gkd_den.svg -> /files/docs/gkd_den.svg" in bad["04_gkd_den.ipynb"]


def test_make_lab_serves_the_root_and_opens_the_course_index():
    root, opened = served(lab_command())
    assert root == ROOT, f"make lab serves {root}, not the repository's root {ROOT}"
    assert opened == "notebooks/README.md", f"make lab opens {opened!r}"


def test_every_link_and_image_of_the_course_resolves_in_lab():
    root, _ = served(lab_command())
    pages = course_pages(root)
    assert len([p for p in pages if p.suffix == ".ipynb"]) >= 8
    assert root / "docs" / "method.md" in pages  # linked from 00, 03 and 04
    links = sum(len(LINK.findall(markdown_of(p))) for p in pages)
    assert links >= 15, f"only {links} links found: is the pattern still right?"
    bad = missing(root, pages)
    assert not bad, f"links JupyterLab cannot serve (root {root}): {bad}"
