"""Write ``benchmarks/studies/README.md``, the index of the studies, from their READMEs.

Each study is one folder, ``benchmarks/studies/<date>-<question>/``, whose README.md starts
with a title ``# <date>: <the question>`` and holds one status line, exactly one of::

    Status: current
    Status: superseded by <folder of the study that answers its question later>

and a ``## Result`` section. The index has one row per study, newest first: the folder (a
link), the date, the question (the title after its date), the status and the result (the
first paragraph of ``## Result`` when it is at most two lines long, else its first
sentence). Run from anywhere::

    python benchmarks/studies/index.py           # writes benchmarks/studies/README.md
    python benchmarks/studies/index.py --check   # exit 1 if the committed index differs

``tests/test_studies.py`` checks that every study has a README with a status line and that
the committed index is what this script writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = re.compile(r"^(\d{4}-\d{2}-\d{2})-[a-z0-9][a-z0-9-]*$")
STATUS = re.compile(r"^Status: (current|superseded by (\S+))$", re.MULTILINE)
TITLE = re.compile(r"^# (?:\d{4}-\d{2}-\d{2}: )?(.+)$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(*])")

HEADER = """# Studies

One folder per study: its README gives the question, the pre-registration (if any), the exact
commands, the machine, date and commit, the result and its status; its CSVs, mechanism
histories (`.history.jsonl`), tables and figures sit beside it.
[docs/results.md](../../docs/results.md) tells the studies in order, newest first.

**Status.** `current`: the latest answer the kit has to the study's question (the code may
have moved on since: its README names the commit). `superseded by X`: study X answers the
same question again, on later code or at a later setting; the study stays because the record
cites it.

This index is written by `python benchmarks/studies/index.py` from the studies' READMEs; do
not edit it by hand (`tests/test_studies.py` checks that it is up to date).

| study | date | question | status | result |
|---|---|---|---|---|
"""


@dataclass
class Study:
    folder: str
    date: str
    question: str
    status: str          # "current" or "superseded by <folder>"
    superseded_by: str | None
    result: str


def study_folders(root: Path = HERE) -> list[Path]:
    """Every study folder under ``root`` (a folder whose name starts with a date)."""
    return sorted((p for p in root.iterdir() if p.is_dir() and FOLDER.match(p.name)),
                  key=lambda p: p.name, reverse=True)


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a README ('' if it has none)."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(1).strip() if m else ""


def summary(result: str) -> str:
    """The first paragraph of a result if it is at most two lines, else its first sentence."""
    paragraph = result.split("\n\n")[0].strip()
    lines = paragraph.splitlines()
    flat = " ".join(line.strip() for line in lines)
    if len(lines) > 2:
        flat = SENTENCE_END.split(flat)[0]
    return flat


def read_study(folder: Path) -> Study:
    """A study's index row from its README; ValueError naming what is missing."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise ValueError(f"{folder.name}: no README.md")
    text = readme.read_text()
    statuses = STATUS.findall(text)
    if len(statuses) != 1:
        raise ValueError(f"{folder.name}/README.md: {len(statuses)} status lines, need exactly "
                         "one ('Status: current' or 'Status: superseded by <folder>')")
    status, later = statuses[0]
    title = TITLE.search(text)
    if not title:
        raise ValueError(f"{folder.name}/README.md: no '# <date>: <question>' title")
    result = section(text, "Result")
    if not result:
        raise ValueError(f"{folder.name}/README.md: no '## Result' section")
    return Study(folder.name, FOLDER.match(folder.name).group(1), title.group(1).strip(),
                 status, later or None, summary(result))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(root: Path = HERE) -> str:
    """The index, as ``README.md`` of ``root`` should read."""
    rows = []
    for folder in study_folders(root):
        s = read_study(folder)
        status = (f"superseded by [{s.superseded_by}]({s.superseded_by}/README.md)"
                  if s.superseded_by else s.status)
        rows.append(f"| [{s.folder}]({s.folder}/README.md) | {s.date} | {_cell(s.question)} "
                    f"| {status} | {_cell(s.result)} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=HERE, help="the studies folder")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the index differs from what it would write")
    args = p.parse_args(argv)
    text = render(args.root)
    index = args.root / "README.md"
    if args.check:
        same = index.is_file() and index.read_text() == text
        state = "up to date" if same else "out of date: run benchmarks/studies/index.py"
        print(f"{index}: {state}")
        return 0 if same else 1
    index.write_text(text)
    print(f"written: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
