"""No notebook or doc cites a file the repository does not have (e.g. a spec kept
elsewhere): every relative Markdown link resolves, and every file name mentioned in prose
or docstrings exists in the repository."""

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")
NAME = re.compile(r"(?<![\w/.-])((?:\.\./|[\w-]+/)*[\w-]+\.(?:md|ipynb|svg))\b")
# written at run time (by the GPU check, the CV report), never committed
RUNTIME = {"gpu_check.md", "report.md", "table.md"}


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.split()]


def _texts():
    """(file, text) for every doc, notebook (all cells) and module of the library."""
    for path in _tracked():
        if path.suffix == ".md" or (path.suffix == ".py" and path.parent.name == "pagkd_lite"):
            yield path, path.read_text()
        elif path.suffix == ".ipynb":
            cells = json.loads(path.read_text())["cells"]
            yield path, "\n".join("".join(c["source"]) for c in cells)


def missing_references(path: Path, text: str, names: set[str]) -> list[str]:
    """The links and file names in ``text`` (from ``path``) that resolve to no file."""
    bad = []
    for m in LINK.finditer(text):
        target = (m.group(1) or m.group(2)).split("#")[0]
        if target and not re.match(r"[a-z]+:", target) and not (path.parent / target).exists():
            bad.append(target)
    for m in NAME.finditer(text):
        ref = m.group(1)
        here = (path.parent / ref).exists() or (ROOT / ref).exists()
        if not here and Path(ref).name not in names:
            bad.append(ref)
    return sorted(set(bad))


def test_the_checker_catches_a_missing_file():
    names = {p.name for p in _tracked()}
    text = "see SPEC_X.md and [the method](docs/nowhere.md); docs/method.md is fine"
    assert missing_references(ROOT / "README.md", text, names) == ["SPEC_X.md", "docs/nowhere.md"]


def test_no_doc_cites_a_missing_file():
    names = {p.name for p in _tracked()} | RUNTIME
    bad = {}
    for path, text in _texts():
        refs = missing_references(path, text, names)
        if refs:
            bad[str(path.relative_to(ROOT))] = sorted(set(refs))
    assert not bad, f"references to files the repository does not have: {bad}"
