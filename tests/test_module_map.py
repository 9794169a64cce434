"""The README's module map names every module of the package, and no module it does not have."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
ENTRY = re.compile(r"`([\w.]+)`:")  # "`module`: its one concern"


def map_entries(readme: str) -> list[str]:
    """The module names of the README's "Module map" table, in order."""
    section = readme.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [name for row in rows for name in ENTRY.findall(row)]


def package_modules() -> set[str]:
    """Every module of ``pagkd_lite`` as a dotted name below the package (``a`` or ``sub.a``)."""
    pkg = ROOT / "pagkd_lite"
    return {".".join(p.relative_to(pkg).with_suffix("").parts) for p in pkg.rglob("*.py")
            if p.name != "__init__.py"}


def test_the_parser_reads_a_map():
    text = ("x\n## Module map\n\n| layer | m |\n|---|---|\n"
            "| data | `a`: one · `b.c`: two |\n## Next\n`d`:")
    assert map_entries(text) == ["a", "b.c"]


def test_module_map_matches_the_package():
    names = map_entries((ROOT / "README.md").read_text())
    assert len(names) == len(set(names)), "a module is listed twice"
    modules = package_modules()
    extra, missing = set(names) - modules, modules - set(names)
    assert not extra, f"the map names modules that do not exist: {sorted(extra)}"
    assert not missing, f"modules missing from the map: {sorted(missing)}"
