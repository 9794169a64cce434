"""The research record stays one a reader can follow: one folder per study under
``benchmarks/studies/``, each with a README that says its status, an index that is what
``benchmarks/studies/index.py`` writes, and no doc, notebook or study README that cites a
result file (CSV, Markdown table, SVG or HTML figure, mechanism history) the repository does
not have.

``tests/test_links.py`` checks Markdown links, and file names by their base name anywhere in
the repository; this test checks every PATH to a result file, wherever it is written: in a
link, in backticks, in a command of a code block, or in a notebook's code string such as
``Path("../benchmarks/studies/<study>/test.csv")``. A path counts as found when it exists
relative to the citing file or to the repository's root (a glob must match a file, a
``{a,b}`` list must find each member)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "benchmarks" / "studies"

# a path with at least one folder, ending in a result file's suffix (or a `.*` glob)
PATH = re.compile(r"(?<![\w/.*{},<>-])((?:\.\.?/)*(?:[\w.*{},<>-]+/)+[\w.*{},<>-]*"
                  r"\.(?:csv|md|svg|html|jsonl|\*))(?![\w/])")
# written by the commands the record cites but not committed: path -> why
NOT_COMMITTED = {
    "benchmarks/studies/2026-12-07-frozen-target/validation_part_a.csv":
        "the two processes' parts, merged into validation.csv",
    "benchmarks/studies/2026-12-07-frozen-target/test_part_a.csv":
        "the two processes' parts, merged into test.csv",
}
RECORD = ("benchmarks/", "docs/", "data_cards/")


def _index_module():
    spec = importlib.util.spec_from_file_location("studies_index", STUDIES / "index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _files() -> set[str]:
    """The repository's files (tracked, or new and not ignored), as root-relative paths."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _citing_texts(files: set[str]):
    """(file, text) of every doc, the README, every notebook (all cells) and every README
    under benchmarks/."""
    for rel in sorted(files):
        path = ROOT / rel
        if not path.is_file():
            continue
        if rel == "README.md" or re.fullmatch(r"docs/[^/]+\.md", rel) or (
                rel.startswith("benchmarks/") and path.name == "README.md"):
            yield path, path.read_text()
        elif re.fullmatch(r"notebooks/[^/]+\.ipynb", rel):
            cells = json.loads(path.read_text())["cells"]
            yield path, "\n".join("".join(c["source"]) for c in cells)


def _expand(ref: str) -> list[str]:
    """``a_{x,y}.csv`` -> ``a_x.csv``, ``a_y.csv`` (nested lists are not used)."""
    m = re.search(r"\{([^{}]*)\}", ref)
    if not m:
        return [ref]
    return [e for part in m.group(1).split(",")
            for e in _expand(ref[:m.start()] + part + ref[m.end():])]


def _found(rel: str, files: set[str]) -> bool:
    if any(c in rel for c in "*?["):
        return any(fnmatch.fnmatchcase(f, rel) for f in files)
    return rel in files or (ROOT / rel).is_file()


def missing_paths(path: Path, text: str, files: set[str]) -> list[str]:
    """The result-file paths cited in ``text`` (from ``path``) that resolve to no file.
    Only paths into the repository count: into the record's folders (``benchmarks/``,
    ``docs/``, ``data_cards/``) or into a folder that has files; not a reader's own
    (``my_data/manifest.csv``), a placeholder (``<out>/x.csv``) or a run's output
    (``runs/``)."""
    folders = {os.path.dirname(f) for f in files}
    bad = []
    for m in PATH.finditer(text):
        ref = m.group(1)
        if re.search(r"[<>]", ref) or "runs/" in ref:
            continue
        for one in _expand(ref):
            where = [os.path.normpath(os.path.relpath(path.parent / one, ROOT)),
                     os.path.normpath(one)]
            where = [w for w in where
                     if w.startswith(RECORD) or os.path.dirname(w) in folders]
            if not where or any(w in NOT_COMMITTED or _found(w, files) for w in where):
                continue
            bad.append(one)
    return sorted(set(bad))


def test_the_path_checker_catches_a_missing_file():
    files = _files()
    study = "benchmarks/studies/2026-12-07-authors-settings"
    text = ("`benchmarks/studies/nowhere/test.csv`, ![fig](../benchmarks/studies/x/a.svg) and\n"
            'GONE = Path("../benchmarks/studies/gone/regime_map.csv")  # these exist:\n'
            f'"../{study}/test.csv" [index](../benchmarks/studies/README.md) `{study}/test.md`')
    assert missing_paths(ROOT / "notebooks" / "05_training_pagkd.ipynb", text, files) == [
        "../benchmarks/studies/gone/regime_map.csv", "../benchmarks/studies/x/a.svg",
        "benchmarks/studies/nowhere/test.csv"]
    # a {a,b} list is checked member by member, a glob must match a file
    text = f"{study}/test_part_{{a,b,c}}.csv, {study}/*.csv and `{study}/nothing_*.csv`"
    assert missing_paths(ROOT / "docs" / "results.md", text, files) == [
        f"{study}/nothing_*.csv", f"{study}/test_part_c.csv"]


def test_every_cited_result_file_exists():
    files = _files()
    bad = {}
    for path, text in _citing_texts(files):
        refs = missing_paths(path, text, files)
        if refs:
            bad[str(path.relative_to(ROOT))] = refs
    assert not bad, f"paths to result files the repository does not have: {bad}"


def test_every_study_has_a_readme_with_a_status():
    index = _index_module()
    folders = {Path(f).parts[2] for f in _files()
               if f.startswith("benchmarks/studies/") and len(Path(f).parts) > 3}
    assert folders, "no study folders found"
    for name in sorted(folders):
        assert index.FOLDER.match(name), f"benchmarks/studies/{name}: not <date>-<question>"
        study = index.read_study(STUDIES / name)  # raises, naming what is missing
        if study.superseded_by:
            assert study.superseded_by in folders, (
                f"{name}: superseded by {study.superseded_by}, which is no study folder")


def test_the_status_check_catches_a_missing_readme_or_status(tmp_path):
    index = _index_module()
    (tmp_path / "2026-01-01-no-readme").mkdir()
    with pytest.raises(ValueError, match="no README.md"):
        index.read_study(tmp_path / "2026-01-01-no-readme")
    folder = tmp_path / "2026-01-02-no-status"
    folder.mkdir()
    (folder / "README.md").write_text("# 2026-01-02: a question\n\nstatus: fine\n\n"
                                      "## Result\n\nA number.\n")
    with pytest.raises(ValueError, match="0 status lines"):
        index.read_study(folder)
    (folder / "README.md").write_text("# 2026-01-02: a question\n\nStatus: current\n\n"
                                      "## Result\n\nA number.\nIts meaning.\n")
    assert index.read_study(folder).result == "A number. Its meaning."


def test_no_result_file_outside_the_studies():
    """The flat folder the studies replaced stays gone (issue 36): a run's default output
    is a study folder now (``pagkd-lite bench``: ``benchmarks/studies/<today>-bench/``)."""
    left = sorted(f for f in _files() if f.startswith("benchmarks/results/"))
    assert not left, f"files in benchmarks/results/, which the studies replaced: {left}"


def test_the_committed_index_is_what_the_script_writes():
    expected = _index_module().render(STUDIES)
    assert (STUDIES / "README.md").read_text() == expected, (
        "benchmarks/studies/README.md is out of date: python benchmarks/studies/index.py")
