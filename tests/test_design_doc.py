"""Every design reference in the source points at a section of docs/DESIGN.md that exists,
and nothing cites a document outside the repository (MOA.md, STYLE.md)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
SOURCES = sorted((ROOT / "src" / "moa").rglob("*.py"))

HEADING = re.compile(r"^#{2,4} §(\d+(?:\.\d+)*) \S", re.MULTILINE)
REFERENCE = re.compile(r"DESIGN\.md(?: (§\d+(?:\.\d+)*))?")


def design_sections() -> list[str]:
    return HEADING.findall(DESIGN.read_text())


def test_sections_are_numbered_in_order():
    sections = design_sections()
    assert len(sections) == len(set(sections)), sections
    top = [int(s) for s in sections if "." not in s]
    assert top == list(range(1, len(top) + 1)), top
    for s in sections:  # a subsection §a.b sits under an existing §a
        assert "." not in s or s.rsplit(".", 1)[0] in sections, s


def test_every_design_reference_names_an_existing_section():
    sections = set(design_sections())
    found, bad = 0, []
    for path in SOURCES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in REFERENCE.finditer(line):
                found += 1
                if "docs/DESIGN.md" not in line or m.group(1) is None or m.group(1)[1:] not in sections:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not bad, "references without an existing docs/DESIGN.md §N:\n" + "\n".join(bad)
    assert found >= 30  # the source does cite the design (a scan that finds nothing proves nothing)


def test_no_reference_to_documents_outside_the_repository():
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in SOURCES
           for i, line in enumerate(p.read_text().splitlines(), 1) if "MOA.md" in line or "STYLE.md" in line]
    assert not bad, "\n".join(bad)
